"""YOLOv4-tiny loss: CIoU box loss, objectness BCE with an ignore band, class BCE with label smoothing.

Every term is a sum (over positives for box and class, over non-ignored cells for objectness),
divided by the batch size, then weighted. Targets come from targets.build_targets; decoding
follows decode.py. The settings are the spec's `loss` section (`YoloLossConfig`).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ....errors import DataError
from .decode import decode_level
from .spec import YoloLossConfig
from .targets import build_targets


def ciou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU [...] of xyxy boxes [..., 4]: IoU - d^2/c^2 - alpha*v (Zheng et al. 2020).

    d is the centre distance, c the diagonal of the smallest enclosing box,
    v = 4/pi^2 (atan(w2/h2) - atan(w1/h1))^2 and alpha = v / (1 - IoU + v), treated as a constant
    in the backward pass as in the paper. Safe (finite value and gradients) for zero-size boxes.
    """
    b1x1, b1y1, b1x2, b1y2 = box1.unbind(-1)
    b2x1, b2y1, b2x2, b2y2 = box2.unbind(-1)
    w1, h1 = (b1x2 - b1x1).clamp(min=0), (b1y2 - b1y1).clamp(min=0)
    w2, h2 = (b2x2 - b2x1).clamp(min=0), (b2y2 - b2y1).clamp(min=0)
    inter = (torch.minimum(b1x2, b2x2) - torch.maximum(b1x1, b2x1)).clamp(min=0) * \
            (torch.minimum(b1y2, b2y2) - torch.maximum(b1y1, b2y1)).clamp(min=0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.maximum(b1x2, b2x2) - torch.minimum(b1x1, b2x1)
    ch = torch.maximum(b1y2, b2y2) - torch.minimum(b1y1, b2y1)
    c2 = cw ** 2 + ch ** 2 + eps
    rho2 = ((b1x1 + b1x2 - b2x1 - b2x2) ** 2 + (b1y1 + b1y2 - b2y1 - b2y2) ** 2) / 4
    v = (4 / math.pi ** 2) * (torch.atan(w2 / (h2 + eps)) - torch.atan(w1 / (h1 + eps))) ** 2
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return iou - rho2 / c2 - alpha * v


def _max_iou_with_gt(pred: torch.Tensor, gt_boxes: torch.Tensor, gt_valid: torch.Tensor) -> torch.Tensor:
    """pred [N, P, 4], gt_boxes [N, G, 4], gt_valid [N, G] -> best IoU [N, P] with a valid gt."""
    area_p = ((pred[..., 2] - pred[..., 0]).clamp(min=0) * (pred[..., 3] - pred[..., 1]).clamp(min=0))[:, :, None]
    area_g = ((gt_boxes[..., 2] - gt_boxes[..., 0]).clamp(min=0) * (gt_boxes[..., 3] - gt_boxes[..., 1]).clamp(min=0))
    area_g = area_g.masked_fill(~gt_valid, 0.0)[:, None, :]
    p, g = pred[:, :, None, :], gt_boxes[:, None, :, :]
    inter = (torch.minimum(p[..., 2], g[..., 2]) - torch.maximum(p[..., 0], g[..., 0])).clamp_(min=0) * \
            (torch.minimum(p[..., 3], g[..., 3]) - torch.maximum(p[..., 1], g[..., 1])).clamp_(min=0)
    iou = inter / (area_p + area_g - inter).clamp_(min=1e-9)
    iou = iou * gt_valid[:, None, :]
    return iou.max(-1).values


def yolo_loss(outputs: Sequence[torch.Tensor], gt: Sequence[tuple[torch.Tensor, torch.Tensor]],
              anchors: torch.Tensor, strides: Sequence[int], num_classes: int,
              cfg: YoloLossConfig | None = None, grid_xy_extend: float = 0.05) -> dict:
    """Loss terms for head outputs [N, A*(5+C), H, W] per level and per-image gt (boxes xyxy px, labels).

    Returns scalars total, box, obj, cls (already weighted and divided by the batch size, so
    total = box + obj + cls) and num_positives (a long tensor). Computed in float32. `grid_xy_extend`
    is the decoder's (model.grid_xy_extend), so boxes are decoded as at inference.
    """
    cfg = cfg or YoloLossConfig()
    outputs = [o.float() for o in outputs]
    n_img = int(outputs[0].shape[0])
    if len(gt) != n_img:
        raise ValueError(f"{len(gt)} ground-truth entries for a batch of {n_img}")
    device = outputs[0].device
    anchors = anchors.to(device=device, dtype=torch.float32)
    gt = [(b.reshape(-1, 4).to(device=device, dtype=torch.float32), lab.reshape(-1).to(device=device, dtype=torch.long))
          for b, lab in gt]
    all_labels = torch.cat([lab for _, lab in gt]) if gt else torch.zeros(0, dtype=torch.long)
    if all_labels.numel() and bool(((all_labels < 0) | (all_labels >= num_classes)).any()):
        raise DataError(f"a box label lies outside 0..{num_classes - 1}; check the class list in the spec "
                        f"against the labels in the dataset")
    grid_hw = [(int(o.shape[2]), int(o.shape[3])) for o in outputs]
    targets = build_targets(gt, anchors, strides, grid_hw, cfg.box_matching_iou)

    max_gt = max((len(b) for b, _ in gt), default=0)
    gt_boxes = torch.zeros(n_img, max(max_gt, 1), 4, device=device)
    gt_valid = torch.zeros(n_img, max(max_gt, 1), dtype=torch.bool, device=device)
    for i, (b, _) in enumerate(gt):
        gt_boxes[i, :len(b)] = b
        gt_valid[i, :len(b)] = True

    zero = outputs[0].new_zeros(())
    box_sum, obj_sum, cls_sum = zero, zero, zero
    num_pos = torch.zeros((), dtype=torch.long, device=device)
    ls = float(cfg.label_smoothing)
    for level, output in enumerate(outputs):
        raw, boxes = decode_level(output, anchors[level], strides[level], grid_xy_extend)
        t = targets[level]
        pos = t["positive"]
        num_pos = num_pos + pos.sum()
        with torch.no_grad():
            if max_gt > 0:
                best = _max_iou_with_gt(boxes.detach().reshape(n_img, -1, 4), gt_boxes, gt_valid)
                ignore = (best.view_as(pos) > cfg.matching_neutral_box_iou) & ~pos
            else:
                ignore = torch.zeros_like(pos)
        obj_bce = F.binary_cross_entropy_with_logits(raw[..., 4], pos.float(), reduction="none")
        obj_sum = obj_sum + obj_bce.masked_fill(ignore, 0.0).sum()
        box_sum = box_sum + (1.0 - ciou(boxes[pos], t["box"][pos])).sum()
        onehot = F.one_hot(t["label"][pos], num_classes).float()
        cls_sum = cls_sum + F.binary_cross_entropy_with_logits(
            raw[..., 5:][pos], onehot * (1.0 - ls) + ls / 2, reduction="sum")

    box = cfg.box_weight * box_sum / n_img
    obj = cfg.obj_weight * obj_sum / n_img
    cls = cfg.cls_weight * cls_sum / n_img
    return {"total": box + obj + cls, "box": box, "obj": obj, "cls": cls, "num_positives": num_pos}
