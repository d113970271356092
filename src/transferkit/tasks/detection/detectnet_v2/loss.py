"""DetectNet_v2 loss: weighted BCE on the coverage map plus a box loss inside the coverage.

Targets come from targets.rasterise (stacked over the batch). Coverage cells are weighted as in
TAO's cost function: a positive cell (target > 0.5) by coverage_foreground_weight, a background
cell by 1 - coverage_foreground_weight, a dead-zone or ignored cell by 0; the sum over the cells is
divided by the number of images. The box loss is summed over positive cells and divided by their
number (at least 1). class_weights scale both terms per class. The settings are the spec's `loss`
section (`LossConfig`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .spec import LossConfig


def giou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """1 - GIoU of boxes given as x1, y1, x2, y2 in the last dimension; inverted predicted boxes count as empty."""
    px1, py1, px2, py2 = pred.unbind(-1)
    tx1, ty1, tx2, ty2 = target.unbind(-1)
    pred_area = (px2 - px1).clamp(min=0) * (py2 - py1).clamp(min=0)
    target_area = (tx2 - tx1).clamp(min=0) * (ty2 - ty1).clamp(min=0)
    inter = (torch.minimum(px2, tx2) - torch.maximum(px1, tx1)).clamp(min=0) * \
            (torch.minimum(py2, ty2) - torch.maximum(py1, ty1)).clamp(min=0)
    union = pred_area + target_area - inter
    hull = (torch.maximum(px2, tx2) - torch.minimum(px1, tx1)).clamp(min=0) * \
           (torch.maximum(py2, ty2) - torch.minimum(py1, ty1)).clamp(min=0)
    iou = inter / (union + eps)
    return 1.0 - (iou - (hull - union) / (hull + eps))


def detectnet_loss(
    outputs: tuple[torch.Tensor, torch.Tensor],
    targets: dict[str, torch.Tensor],
    cfg: LossConfig = LossConfig(),
) -> dict[str, torch.Tensor]:
    """outputs = (coverage logits [N, C, H, W], bbox [N, 4C, H, W]); targets as rasterise() gives, batched.

    Returns total, coverage and bbox (both already weighted, total = coverage + bbox), and the
    unweighted l1 and/or giou terms.
    """
    cov_logits, bbox = outputs
    n, num_classes, out_h, out_w = cov_logits.shape
    class_w = torch.ones(num_classes, device=cov_logits.device, dtype=cov_logits.dtype)
    if cfg.class_weights is not None:
        if len(cfg.class_weights) != num_classes:
            raise ValueError(f"class_weights has {len(cfg.class_weights)} values for {num_classes} classes")
        class_w = torch.as_tensor(list(cfg.class_weights), device=cov_logits.device, dtype=cov_logits.dtype)
    class_w = class_w[None, :, None, None]

    cov_target = targets["cov"].to(cov_logits)
    cov_weight = targets["cov_weight"].to(cov_logits)
    fg = cfg.coverage_foreground_weight
    cell_w = torch.where(cov_target > 0.5, fg, 1.0 - fg) * cov_weight * class_w
    bce = F.binary_cross_entropy_with_logits(cov_logits, cov_target, reduction="none")
    # Summed over each image's cells, as TAO's cost does (a mean over cells would shrink the coverage
    # term by the grid size and leave it far below the box term: coverage then never learns).
    coverage = (bce * cell_w).sum() / n

    pred = bbox.reshape(n, num_classes, 4, out_h, out_w)
    true = targets["bbox"].to(bbox).reshape(n, num_classes, 4, out_h, out_w)
    box_w = targets["bbox_weight"].to(bbox) * class_w  # [N, C, H, W]
    positives = targets["bbox_weight"].sum().clamp(min=1.0)
    result: dict[str, torch.Tensor] = {}
    box_term = bbox.new_zeros(())
    if cfg.bbox_loss in ("l1", "l1+giou"):
        l1 = ((pred - true).abs().sum(2) * box_w).sum() / positives
        result["l1"] = l1
        box_term = box_term + cfg.bbox_weight * l1
    if cfg.bbox_loss in ("giou", "l1+giou"):
        # Both boxes are measured from the same anchor, and GIoU ignores shifts and scale,
        # so the corners (-b0, -b1, b2, b3) stand in for the decoded boxes.
        sign = torch.tensor([-1.0, -1.0, 1.0, 1.0], device=bbox.device, dtype=bbox.dtype)[:, None, None]
        g = giou_loss((pred * sign).movedim(2, -1), (true * sign).movedim(2, -1))  # [N, C, H, W]
        giou = (g * box_w).sum() / positives
        result["giou"] = giou
        box_term = box_term + cfg.giou_weight * giou
    coverage = cfg.coverage_weight * coverage
    return {"total": coverage + box_term, "coverage": coverage, "bbox": box_term, **result}
