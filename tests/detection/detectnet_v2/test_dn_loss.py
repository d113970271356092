"""DetectNet_v2 loss: ~0 for perfect outputs, larger for wrong ones, weights respected."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from transferkit.tasks.detection.detectnet_v2.loss import detectnet_loss, giou_loss
from transferkit.errors import SpecError
from transferkit.spec import load_spec
from transferkit.tasks.detection.detectnet_v2.spec import DetectNetSpec, LossConfig, TargetSettings
from transferkit.tasks.detection.detectnet_v2.targets import rasterise

STRIDE = 16


def batch_targets() -> dict[str, torch.Tensor]:
    cfg = TargetSettings(cov_radius_x=0.5, cov_radius_y=0.5, deadzone_radius=1.0)
    one = rasterise(np.array([[16, 16, 80, 80], [4, 6, 34, 40]]), np.array([0, 1]), 2, 6, 6, STRIDE, cfg,
                    ignore=np.array([[64, 64, 96, 96]]))
    return {k: v[None] for k, v in one.items()}


def perfect(t: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return (t["cov"] * 2 - 1) * 30, t["bbox"].clone()


@pytest.mark.parametrize("bbox_loss", ["l1", "giou", "l1+giou"])
def test_perfect_outputs_cost_nothing_and_wrong_ones_cost_more(bbox_loss):
    t = batch_targets()
    cfg = LossConfig(bbox_loss=bbox_loss)
    good = detectnet_loss(perfect(t), t, cfg)
    assert good["total"].item() < 1e-6
    assert good["total"].item() == pytest.approx(good["coverage"].item() + good["bbox"].item())
    cov_wrong = detectnet_loss((-perfect(t)[0], t["bbox"]), t, cfg)
    box_wrong = detectnet_loss((perfect(t)[0], t["bbox"] * 0.5), t, cfg)
    assert cov_wrong["coverage"] > 1.0 and cov_wrong["bbox"] < 1e-6
    assert box_wrong["bbox"] > 0.1 and box_wrong["coverage"] < 1e-6


def test_dead_zone_and_ignored_cells_do_not_contribute():
    t = batch_targets()
    logits, bbox = perfect(t)
    assert (t["cov_weight"] == 0).sum() > 0
    flipped = torch.where(t["cov_weight"] == 0, -logits + 40, logits)  # wrong everywhere weight is 0
    bbox_off = torch.where(t["bbox_weight"].repeat_interleave(4, 1) == 0, bbox + 3, bbox)
    assert detectnet_loss((flipped, bbox_off), t)["total"].item() < 1e-6


def test_foreground_weight_splits_positive_and_background_cells_summed_per_image():
    t = {"cov": torch.tensor([[[[1.0, 0.0]]]]), "cov_weight": torch.ones(1, 1, 1, 2),
         "bbox": torch.zeros(1, 4, 1, 2), "bbox_weight": torch.zeros(1, 1, 1, 2)}
    logits = torch.zeros(1, 1, 1, 2)  # BCE log(2) on both cells
    loss = detectnet_loss((logits, torch.zeros(1, 4, 1, 2)), t, LossConfig(coverage_foreground_weight=0.2))
    assert loss["coverage"].item() == pytest.approx((0.2 + 0.8) * np.log(2), rel=1e-5)


def test_class_weights_scale_each_class():
    t = batch_targets()
    logits, bbox = perfect(t)
    logits[:, 1] = -logits[:, 1]  # class 1 entirely wrong
    assert detectnet_loss((logits, bbox), t, LossConfig(class_weights=[1.0, 0.0]))["total"].item() < 1e-6
    assert detectnet_loss((logits, bbox), t, LossConfig(class_weights=[1.0, 1.0]))["total"].item() > 0.1
    with pytest.raises(ValueError, match="3 values for 2 classes"):
        detectnet_loss((logits, bbox), t, LossConfig(class_weights=[1, 1, 1]))


def test_giou_loss_values():
    a = torch.tensor([0.0, 0.0, 2.0, 2.0])
    assert giou_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert giou_loss(a, torch.tensor([1.0, 0.0, 3.0, 2.0])).item() == pytest.approx(1 - 1 / 3, abs=1e-6)
    # disjoint boxes: IoU 0, union 8, hull 6x2 = 12 -> 1 + (12 - 8) / 12
    assert giou_loss(a, torch.tensor([4.0, 0.0, 6.0, 2.0])).item() == pytest.approx(1 + 4 / 12, abs=1e-6)


def test_unknown_bbox_loss_is_refused_with_its_key():
    with pytest.raises(SpecError, match="loss.bbox_loss: .*'l1', 'giou' or 'l1\\+giou'"):
        load_spec(DetectNetSpec, None, ["loss.bbox_loss=smooth_l1"])
