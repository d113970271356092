"""Segmentation loss: pixel cross-entropy with optional class weights, plus optional soft Dice.

Pixels whose mask value is `ignore_index` count nowhere: not in the cross-entropy, its
normalisation, nor the Dice sums. Every other mask value must be a class index in [0, C).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import DataError, SpecError

# auto weights are clamped to this range (after normalising to 1 for an average labelled pixel):
# a class of a few hundred pixels among millions would otherwise get a weight in the hundreds,
# and its handful of pixels would dominate every batch they appear in.
AUTO_WEIGHT_RANGE = (0.1, 10.0)


def auto_class_weights(pixel_counts: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Class weights from training pixel counts: inverse square root of each class's frequency.

    Inverse sqrt rather than median-frequency balancing (w = median f / f, proportional to 1/f): on
    the small, skewed sets this toolkit fine-tunes on (a background holding 90 % of pixels, an object
    class 0.1 %), 1/f gives the rare class 900x the background's weight, so a few pixels dominate the
    loss, it turns noisy and the rare class is over-predicted; 1/sqrt(f) gives 30x, still enough to
    keep the class from being ignored.
    Weights are scaled so that the average labelled pixel weighs 1, then clamped to AUTO_WEIGHT_RANGE.
    A class with no pixels gets weight 1 (neutral): it cannot affect the training loss, and the
    validation loss still counts its pixels, where weight 0 would hide them.
    """
    counts = torch.as_tensor(np.asarray(pixel_counts, dtype=np.float64), dtype=torch.float64)
    if counts.ndim != 1 or counts.numel() == 0 or bool((counts < 0).any()) or not bool(torch.isfinite(counts).all()):
        raise DataError(f"loss.class_weights=auto needs one non-negative pixel count per class, got {counts.tolist()}")
    total = float(counts.sum())
    if total <= 0:
        raise DataError("loss.class_weights=auto: the training masks hold no labelled pixels (every pixel is the "
                        "ignore id or outside the class table); check data.train_masks and data.classes")
    freq = counts / total
    present = counts > 0
    weights = torch.ones_like(freq)
    weights[present] = freq[present].rsqrt()
    weights[present] /= (freq[present] * weights[present]).sum()  # mean weight per labelled pixel = 1
    weights[present] = weights[present].clamp(*AUTO_WEIGHT_RANGE)
    return weights.float()


def resolve_class_weights(class_weights: Any, num_classes: int,
                          pixel_counts: Sequence[int] | np.ndarray | None = None) -> torch.Tensor | None:
    """The spec's loss.class_weights ("auto" | "none" | list of floats) as a tensor, or None (unweighted)."""
    if class_weights is None or (isinstance(class_weights, str) and class_weights.lower() == "none"):
        return None
    if isinstance(class_weights, str):
        if class_weights.lower() != "auto":
            raise SpecError(f"loss.class_weights must be auto, none or a list of {num_classes} numbers, "
                            f"got {class_weights!r}")
        if pixel_counts is None:
            raise SpecError("loss.class_weights=auto needs the training masks' pixel counts; set data.train_masks")
        weights = auto_class_weights(pixel_counts)
        if len(weights) != num_classes:
            raise DataError(f"loss.class_weights=auto: {len(weights)} pixel counts for {num_classes} classes")
        return weights
    values = [float(v) for v in class_weights]
    if len(values) != num_classes:
        raise SpecError(f"loss.class_weights has {len(values)} values but there are {num_classes} classes; give one "
                        "per class, in data.classes order")
    if any(not np.isfinite(v) or v < 0 for v in values) or not any(v > 0 for v in values):
        raise SpecError(f"loss.class_weights must be finite, >= 0 and not all 0, got {values}")
    return torch.tensor(values, dtype=torch.float32)


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor, cfg: Any, class_weights: torch.Tensor | None,
                      ignore_index: int) -> dict[str, torch.Tensor]:
    """{"total", "ce"} (+ "dice" when cfg.dice_weight > 0) for logits [N,C,H,W] and masks [N,H,W] (int64).

    ce: the class-weighted mean over labelled pixels (sum of w[y] * -log p_y divided by the sum of
    w[y]); 0, not NaN, when a batch has no labelled pixel. dice: 1 - mean soft Dice over the
    classes present in the batch's labelled pixels, counted over the whole batch (not per image), so a
    class absent from the batch neither rewards nor penalises it. total = ce + cfg.dice_weight * dice.
    `cfg` is the spec's SegLossConfig (only `dice_weight` is read here; the caller resolves
    class_weights with `resolve_class_weights`).
    """
    masks = masks.long()
    valid = masks != ignore_index
    if class_weights is not None:
        class_weights = class_weights.to(device=logits.device, dtype=logits.dtype)
    per_pixel = F.cross_entropy(logits, masks, weight=class_weights, ignore_index=ignore_index, reduction="none")
    safe = torch.where(valid, masks, torch.zeros_like(masks))  # ignored pixels indexed as class 0, then masked out
    if class_weights is None:
        norm = valid.sum().to(logits.dtype)
    else:
        norm = (class_weights[safe] * valid).sum()
    # Where norm is 0 every per-pixel term is 0 too, so the tiny floor gives 0 instead of 0/0.
    ce = per_pixel.sum() / norm.clamp_min(torch.finfo(logits.dtype).tiny)
    out = {"ce": ce}
    dice_weight = float(getattr(cfg, "dice_weight", 0.0) or 0.0)
    total = ce
    if dice_weight > 0:
        out["dice"] = soft_dice_loss(logits, safe, valid)
        total = ce + dice_weight * out["dice"]
    out["total"] = total
    return out


def soft_dice_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """1 - mean over present classes of 2|P.G| / (|P| + |G|), with P the softmax and G the one-hot
    targets, both over the `valid` pixels of the whole batch. No smoothing term: a present class has
    |G| >= 1. 0 when no class is present."""
    num_classes = logits.shape[1]
    probs = logits.float().softmax(dim=1) * valid.unsqueeze(1)
    onehot = F.one_hot(targets, num_classes).permute(0, 3, 1, 2).to(probs.dtype) * valid.unsqueeze(1)
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    truth = onehot.sum(dims)
    cardinality = probs.sum(dims) + truth
    present = truth > 0
    dice = 2 * intersection[present] / cardinality[present]
    if dice.numel() == 0:
        return logits.sum() * 0  # keeps the graph (and DDP's gradient sync) intact
    return (1 - dice.mean()).to(logits.dtype)
