"""Segmentation loss: ignored pixels count nowhere, class weights weigh pixels, Dice, auto weights."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from transferkit.errors import DataError, SpecError
from transferkit.tasks.segmentation.loss import (
    AUTO_WEIGHT_RANGE, auto_class_weights, resolve_class_weights, segmentation_loss,
)

IGNORE = 255
CE_ONLY = SimpleNamespace(class_weights="none", dice_weight=0.0)
WITH_DICE = SimpleNamespace(class_weights="none", dice_weight=0.5)


def _batch(seed: int = 0, classes: int = 3):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, classes, 8, 8, generator=gen)
    masks = torch.randint(0, classes, (2, 8, 8), generator=gen)
    return logits, masks


def test_ignored_pixels_do_not_change_the_loss_whatever_their_logits():
    logits, masks = _batch()
    masks[:, :3] = IGNORE
    other = logits.clone()
    other[:, :, :3] = torch.randn_like(other[:, :, :3]) * 10  # only the ignored rows differ
    weights = torch.tensor([0.5, 2.0, 1.0])
    for cfg in (CE_ONLY, WITH_DICE):
        a = segmentation_loss(logits, masks, cfg, weights, IGNORE)
        b = segmentation_loss(other, masks, cfg, weights, IGNORE)
        assert torch.allclose(a["total"], b["total"]) and torch.allclose(a["ce"], b["ce"])
    # and equal to the loss on the labelled pixels alone
    kept = masks[:, 3:]
    expected = F.cross_entropy(logits[:, :, 3:], kept, weight=weights)
    assert torch.allclose(segmentation_loss(logits, masks, CE_ONLY, weights, IGNORE)["ce"], expected)


def test_all_ignored_gives_zero_not_nan_and_keeps_the_graph():
    logits, masks = _batch()
    logits.requires_grad_(True)
    out = segmentation_loss(logits, torch.full_like(masks, IGNORE), WITH_DICE, torch.tensor([1.0, 2.0, 3.0]), IGNORE)
    assert float(out["total"].detach()) == 0.0 and float(out["dice"].detach()) == 0.0
    out["total"].backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) == 0.0


def test_class_weights_weigh_each_pixel_by_its_true_class():
    logits, masks = _batch(1)
    plain = segmentation_loss(logits, masks, CE_ONLY, None, IGNORE)["ce"]
    # Uniform weights change nothing (the mean divides by the summed weights).
    assert torch.allclose(segmentation_loss(logits, masks, CE_ONLY, torch.full((3,), 4.0), IGNORE)["ce"], plain)
    # Weight 0 on class 1: the loss is the mean over the class 0 and 2 pixels only.
    per_pixel = F.cross_entropy(logits, masks, reduction="none")
    others = masks != 1
    got = segmentation_loss(logits, masks, CE_ONLY, torch.tensor([1.0, 0.0, 1.0]), IGNORE)["ce"]
    assert torch.allclose(got, per_pixel[others].mean())
    # Up-weighting the class the model gets most wrong raises the loss.
    worst = max(range(3), key=lambda c: float(per_pixel[masks == c].mean()))
    heavy = torch.ones(3)
    heavy[worst] = 5.0
    assert segmentation_loss(logits, masks, CE_ONLY, heavy, IGNORE)["ce"] > plain


def test_dice_is_zero_for_a_perfect_prediction_and_positive_otherwise():
    _, masks = _batch(2)
    masks[0, 0, 0] = IGNORE
    perfect = F.one_hot(masks.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 100.0
    perfect[0, :, 0, 0] = torch.tensor([0.0, 0.0, 100.0])  # whatever sits under an ignored pixel
    out = segmentation_loss(perfect, masks, WITH_DICE, None, IGNORE)
    assert float(out["dice"]) == pytest.approx(0.0, abs=1e-6)
    wrong = perfect.roll(1, dims=1)
    assert float(segmentation_loss(wrong, masks, WITH_DICE, None, IGNORE)["dice"]) > 0.9


def test_dice_averages_over_classes_present_only():
    masks = torch.zeros(1, 4, 4, dtype=torch.long)  # only class 0 present
    logits = torch.zeros(1, 3, 4, 4)
    logits[:, 0] = 100.0
    # Classes 1 and 2 are absent: a perfect class-0 prediction scores 0, not 2/3.
    assert float(segmentation_loss(logits, masks, WITH_DICE, None, IGNORE)["dice"]) == pytest.approx(0.0, abs=1e-6)


def test_total_adds_the_weighted_dice_and_dice_is_absent_when_off():
    logits, masks = _batch(3)
    off = segmentation_loss(logits, masks, CE_ONLY, None, IGNORE)
    assert "dice" not in off and torch.equal(off["total"], off["ce"])
    on = segmentation_loss(logits, masks, WITH_DICE, None, IGNORE)
    assert torch.allclose(on["total"], on["ce"] + 0.5 * on["dice"])


def test_auto_weights_favour_rare_classes_by_inverse_sqrt_frequency():
    w = auto_class_weights([900, 100, 0])
    assert float(w[1] / w[0]) == pytest.approx(3.0)  # sqrt(900 / 100)
    assert float(w[2]) == 1.0  # no pixels: neutral
    freq = torch.tensor([0.9, 0.1])
    assert float((freq * w[:2]).sum()) == pytest.approx(1.0)  # the average labelled pixel weighs 1


def test_auto_weights_are_clamped():
    w = auto_class_weights([10_000_000, 1])
    assert float(w.max()) == AUTO_WEIGHT_RANGE[1] and float(w.min()) >= AUTO_WEIGHT_RANGE[0]


def test_auto_weights_refuse_unusable_counts():
    with pytest.raises(DataError, match="no labelled pixels"):
        auto_class_weights([0, 0])
    with pytest.raises(DataError, match="non-negative"):
        auto_class_weights([5, -1])


def test_resolve_class_weights_reads_the_spec_forms():
    assert resolve_class_weights("none", 2) is None
    assert resolve_class_weights("auto", 2, [3, 1]).shape == (2,)
    assert resolve_class_weights([1, 2], 2).tolist() == [1.0, 2.0]
    with pytest.raises(SpecError, match="3 values but there are 2 classes"):
        resolve_class_weights([1, 2, 3], 2)
    with pytest.raises(SpecError, match="not all 0"):
        resolve_class_weights([0, 0], 2)
