"""YOLOv4-tiny training targets: which (level, anchor, cell) predicts which ground-truth box.

Assignment (TAO / darknet style, conventions as in decode.py):

- Each gt box's size is compared with all L*A anchors by corner-aligned IoU (sizes only).
  The best anchor is always positive; every other anchor with IoU > box_matching_iou is positive
  too, on its own level.
- On a level with stride s and grid H x W, the cell is (floor(cx / s), floor(cy / s)) clamped to
  the grid.
- Collisions: when several gts claim the same (image, level, anchor, cell), the one whose size
  matches that anchor better (higher anchor IoU) keeps it; on equal IoU the gt listed first wins.
- Gt boxes with non-positive width or height (e.g. cropped away by augmentation) get no anchor.
"""
from __future__ import annotations

from typing import Sequence

import torch


def iou_wh_torch(wh: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Corner-aligned IoU [N, K] of sizes wh [N, 2] and anchors [K, 2] (torch twin of anchors.iou_wh)."""
    inter = torch.minimum(wh[:, None, 0], anchors[None, :, 0]) * torch.minimum(wh[:, None, 1], anchors[None, :, 1])
    union = (wh[:, 0] * wh[:, 1])[:, None] + (anchors[:, 0] * anchors[:, 1])[None, :] - inter
    return inter / union.clamp(min=1e-9)


def build_targets(gt: Sequence[tuple[torch.Tensor, torch.Tensor]], anchors: torch.Tensor, strides: Sequence[int],
                  grid_hw: Sequence[tuple[int, int]], box_matching_iou: float = 0.25) -> list[dict]:
    """One dict per level: positive [N, A, H, W] bool, box [N, A, H, W, 4] gt xyxy px, label [N, A, H, W] long.

    `gt` holds one (boxes [n, 4] xyxy input px, labels [n] long) per image; `anchors` [L, A, 2].
    Vectorised over every gt of the batch; only the levels are looped over.
    """
    num_levels, num_anchors = int(anchors.shape[0]), int(anchors.shape[1])
    if len(strides) != num_levels or len(grid_hw) != num_levels:
        raise ValueError(f"{num_levels} anchor levels but {len(strides)} strides and {len(grid_hw)} grids")
    n_img = len(gt)
    device = anchors.device
    dtype = anchors.dtype if anchors.is_floating_point() else torch.float32
    targets = []
    for h, w in grid_hw:
        targets.append({
            "positive": torch.zeros(n_img, num_anchors, h, w, dtype=torch.bool, device=device),
            "box": torch.zeros(n_img, num_anchors, h, w, 4, dtype=dtype, device=device),
            "label": torch.zeros(n_img, num_anchors, h, w, dtype=torch.long, device=device),
        })
    if n_img == 0:
        return targets
    boxes = torch.cat([b.reshape(-1, 4).to(device=device, dtype=dtype) for b, _ in gt])
    labels = torch.cat([lab.reshape(-1).to(device=device, dtype=torch.long) for _, lab in gt])
    image = torch.cat([torch.full((len(b.reshape(-1, 4)),), i, dtype=torch.long, device=device)
                       for i, (b, _) in enumerate(gt)])
    if len(labels) != len(boxes):
        raise ValueError(f"{len(boxes)} gt boxes but {len(labels)} labels")
    wh = boxes[:, 2:] - boxes[:, :2]
    usable = (wh > 0).all(1)
    boxes, labels, image, wh = boxes[usable], labels[usable], image[usable], wh[usable]
    n_gt = len(boxes)
    if n_gt == 0:
        return targets

    with torch.no_grad():
        ious = iou_wh_torch(wh, anchors.reshape(-1, 2).to(dtype))  # [G, L*A]
        positive = ious > box_matching_iou
        positive[torch.arange(n_gt, device=device), ious.argmax(1)] = True
        g_idx, la_idx = torch.nonzero(positive, as_tuple=True)
        pair_iou = ious[g_idx, la_idx]
        pair_level = la_idx // num_anchors
        pair_anchor = la_idx % num_anchors
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2

        for level, (h, w) in enumerate(grid_hw):
            sel = pair_level == level
            g, a, iou = g_idx[sel], pair_anchor[sel], pair_iou[sel]
            if g.numel() == 0:
                continue
            stride = float(strides[level])
            gx = torch.floor(centre[g, 0] / stride).long().clamp(0, w - 1)
            gy = torch.floor(centre[g, 1] / stride).long().clamp(0, h - 1)
            key = ((image[g] * num_anchors + a) * h + gy) * w + gx  # flat index into [N, A, H, W]
            size = n_img * num_anchors * h * w
            # collision rule: highest anchor IoU per slot, then lowest gt index among equals
            best_iou = torch.full((size,), -1.0, dtype=iou.dtype, device=device)
            best_iou = best_iou.scatter_reduce(0, key, iou, reduce="amax")
            contender = iou == best_iou[key]
            g_or_big = torch.where(contender, g, torch.full_like(g, n_gt))
            first_g = torch.full((size,), n_gt, dtype=torch.long, device=device)
            first_g = first_g.scatter_reduce(0, key, g_or_big, reduce="amin")
            win = contender & (g == first_g[key])
            key, g = key[win], g[win]
            t = targets[level]
            t["positive"].view(-1)[key] = True
            t["box"].view(-1, 4)[key] = boxes[g]
            t["label"].view(-1)[key] = labels[g]
    return targets
