"""DetectNet_v2 training targets: ground-truth boxes rasterised onto the network's output grid.

Conventions shared with loss.py and postprocess.py:

- Boxes are x1, y1, x2, y2 in input pixels (data/boxes.py). Output cell (i, j) covers input pixels
  [j*stride, (j+1)*stride) x [i*stride, (i+1)*stride); it is sampled at its centre.
- Channel layout (TAO's): coverage [C, H, W]; bbox [4C, H, W] with class c in channels 4c..4c+3.
- objective_set bbox (TAO): a cell's anchor is (ax, ay) = ((j + bbox_offset) * stride,
  (i + bbox_offset) * stride) and its channels b0..b3 place the box edges around it:
  x1 = ax - bbox_scale*b0, y1 = ay - bbox_scale*b1, x2 = ax + bbox_scale*b2, y2 = ay + bbox_scale*b3.

The coverage region of a box is an ellipse (TAO's rasteriser), in output-cell units, shaped by the
spec's `targets` section (`TargetSettings`, one per class once module.configs applies `per_class`):
- centre (x1 + cov_center_x * w, y1 + cov_center_y * h);
- radii cov_radius_x/y times the distance from that centre to the nearest box edge, so 1.0 with a
  centred ellipse is the ellipse inscribed in the box; both radii then grow together (aspect kept)
  until the smaller is at least bbox_min_radius cells, so every box owns at least one cell.
- a dead zone: a ring deadzone_radius cells wide around the ellipse (both radii + deadzone_radius)
  whose cells are neither object nor background (coverage weight 0). TAO instead interpolates its
  deadzone_radius between the coverage ellipse and the box; ours is an absolute width in cells so
  it stays meaningful when the ellipse already fills the box.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .spec import TargetSettings


def per_class(cfg, num_classes: int, what: str = "config") -> list:
    """One config for every class, or a list with exactly one per class."""
    if isinstance(cfg, (list, tuple)):
        if len(cfg) != num_classes:
            raise ValueError(f"got {len(cfg)} per-class {what}s for {num_classes} classes")
        return list(cfg)
    return [cfg] * num_classes


def cell_anchors(out_h: int, out_w: int, stride: int, bbox_offset: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """The objective_set anchor of every cell in input pixels: (ax [W], ay [H])."""
    ax = (torch.arange(out_w, dtype=torch.float32) + bbox_offset) * stride
    ay = (torch.arange(out_h, dtype=torch.float32) + bbox_offset) * stride
    return ax, ay


def _coverage_ellipses(cells: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Centre and coverage radii (cells) of each box; `cells` [N, 4] in cell units, `params` [N, 6]."""
    x1, y1, x2, y2 = cells.unbind(1)
    center_x, center_y, radius_x, radius_y, min_radius, _ = params.unbind(1)
    cx = x1 + center_x * (x2 - x1)
    cy = y1 + center_y * (y2 - y1)
    rx = (radius_x * torch.minimum(cx - x1, x2 - cx)).clamp(min=0.1)
    ry = (radius_y * torch.minimum(cy - y1, y2 - cy)).clamp(min=0.1)
    grow = torch.maximum(torch.ones_like(rx), torch.maximum(min_radius / rx, min_radius / ry))
    return cx, cy, rx * grow, ry * grow


def _ignored_cells(ignore: torch.Tensor, out_h: int, out_w: int, stride: int) -> torch.Tensor:
    """[H, W] True for cells whose centre lies in an ignore box, or that hold an ignore box's centre."""
    mask = torch.zeros(out_h, out_w, dtype=torch.bool)
    if len(ignore) == 0:
        return mask
    u = (torch.arange(out_w, dtype=torch.float32) + 0.5) * stride
    v = (torch.arange(out_h, dtype=torch.float32) + 0.5) * stride
    inside_x = (u[None, :] >= ignore[:, 0:1]) & (u[None, :] <= ignore[:, 2:3])  # [M, W]
    inside_y = (v[None, :] >= ignore[:, 1:2]) & (v[None, :] <= ignore[:, 3:4])  # [M, H]
    mask |= (inside_y[:, :, None] & inside_x[:, None, :]).any(0)
    centre_col = ((ignore[:, 0] + ignore[:, 2]) / 2 / stride).long().clamp(0, out_w - 1)
    centre_row = ((ignore[:, 1] + ignore[:, 3]) / 2 / stride).long().clamp(0, out_h - 1)
    mask[centre_row, centre_col] = True
    return mask


def rasterise(
    boxes: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    num_classes: int,
    out_h: int,
    out_w: int,
    stride: int,
    cfg: TargetSettings | Sequence[TargetSettings] = TargetSettings(),
    ignore: np.ndarray | torch.Tensor | None = None,
    bbox_scale: float = 35.0,
    bbox_offset: float = 0.5,
) -> dict[str, torch.Tensor]:
    """Targets for one image: boxes [N, 4] (input pixels) and labels [N] -> float32 tensors

    cov [C, H, W] (1 in a box's coverage ellipse), bbox [4C, H, W] (objective_set units, 0 outside
    coverage), cov_weight [C, H, W] (0 in dead zones, and in ignore regions outside any object's
    coverage) and bbox_weight [C, H, W] (1 where cov is 1).

    Within a class, boxes are painted largest first, so where two overlap the smaller one owns the
    cells its ellipse and dead zone reach. Ignore regions (DontCare) [M, 4] blank the coverage
    weight of every class there, except on cells that are some object's coverage.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).clone()
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if len(labels) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"box labels must be class indices 0..{num_classes - 1}, got {labels.unique().tolist()}")
    cfgs = per_class(cfg, num_classes, "target config")
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, out_w * stride)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, out_h * stride)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, labels = boxes[keep], labels[keep]

    table = torch.tensor([[c.cov_center_x, c.cov_center_y, c.cov_radius_x, c.cov_radius_y,
                           c.bbox_min_radius, c.deadzone_radius] for c in cfgs], dtype=torch.float32)
    params = table[labels]  # [N, 6]
    cx, cy, rx, ry = _coverage_ellipses(boxes / stride, params)
    dead = params[:, 5]

    u = torch.arange(out_w, dtype=torch.float32) + 0.5  # cell centres, cell units
    v = torch.arange(out_h, dtype=torch.float32) + 0.5
    du = u[None, None, :] - cx[:, None, None]  # [N, 1, W]
    dv = v[None, :, None] - cy[:, None, None]  # [N, H, 1]
    core = (du / rx[:, None, None]) ** 2 + (dv / ry[:, None, None]) ** 2 <= 1  # [N, H, W]
    zone = core | ((du / (rx + dead)[:, None, None]) ** 2 + (dv / (ry + dead)[:, None, None]) ** 2 <= 1)

    # Paint order: largest area first. For every (class, cell), the last box painted there owns it.
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    by_rank = torch.argsort(area, descending=True, stable=True)
    rank = torch.empty_like(by_rank)
    rank[by_rank] = torch.arange(len(by_rank))
    painted = zone.long() * (rank + 1)[:, None, None]  # 0 = not painted
    last = torch.zeros(num_classes, out_h, out_w, dtype=torch.long)
    last.scatter_reduce_(0, labels[:, None, None].expand(-1, out_h, out_w), painted, "amax")
    owned = last > 0
    owner = by_rank[(last - 1).clamp(min=0)] if len(by_rank) else torch.zeros_like(last)  # box index per cell

    rows = torch.arange(out_h)[:, None]
    cols = torch.arange(out_w)[None, :]
    cov = torch.zeros(num_classes, out_h, out_w)
    if len(boxes):
        cov = (owned & core[owner, rows, cols]).float()
    cov_weight = 1.0 - (owned & (cov == 0)).float()
    if ignore is not None:
        ignored = _ignored_cells(torch.as_tensor(ignore, dtype=torch.float32).reshape(-1, 4), out_h, out_w, stride)
        cov_weight[ignored[None].expand_as(cov) & (cov == 0)] = 0.0

    bbox = torch.zeros(num_classes, 4, out_h, out_w)
    if len(boxes):
        ax, ay = cell_anchors(out_h, out_w, stride, bbox_offset)
        x1, y1, x2, y2 = boxes[owner].unbind(-1)  # each [C, H, W]
        bbox = torch.stack([ax - x1, ay[:, None] - y1, x2 - ax, y2 - ay[:, None]], dim=1) / bbox_scale
        bbox = bbox * cov[:, None]
    return {
        "cov": cov,
        "bbox": bbox.reshape(num_classes * 4, out_h, out_w),
        "cov_weight": cov_weight,
        "bbox_weight": cov.clone(),
    }
