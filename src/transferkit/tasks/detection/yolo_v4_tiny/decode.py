"""YOLOv4-tiny head decoding, its inverse for one box, and per-class NMS.

Conventions (shared with model.py, loss.py, targets.py and export.py):

- The network returns one head output per level, each [N, A*(5+C), H, W]. For anchor a the
  channels a*(5+C) + [tx, ty, tw, th, obj, cls_0 .. cls_{C-1}] belong to it.
- Level 0 has stride 32 and the big anchors, level 1 stride 16 and the mid anchors.
  `anchors` is a float tensor [L, A, 2] of (w, h) in network-input pixels; `strides` ints.
- Decoding (YOLOv4 with grid sensitivity e = grid_xy_extend):
    cx = (sigmoid(tx) * (1 + e) - e/2 + gx) * stride      (cy likewise with ty, gy)
    w  = anchor_w * exp(min(tw, MAX_LOG))                   (h likewise)
    objectness = sigmoid(obj), class probabilities = sigmoid(cls)
- decode_outputs flattens every level to M = sum_l H_l*W_l*A boxes ordered by level, then by cell
  in row-major order (y, then x), then by anchor: the box of level l, cell (y, x), anchor a is at
  index  sum_{l' < l} H_l'*W_l'*A  +  (y * W_l + x) * A  +  a.

decode_outputs is traceable by torch.onnx.export (no loops over the batch, -1 for the batch dim,
H and W taken from the tensor shapes).
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch
import torchvision

# exp() argument cap for tw/th: a box at most 62.5x its anchor (torchvision's bbox_xform_clip),
# which keeps exp finite in fp16/fp32 and covers every box an input image can hold.
MAX_LOG = math.log(1000.0 / 16)


def _dims(tensor: torch.Tensor) -> list[int]:
    """The tensor's shape as Python ints. Under ONNX tracing these become constants on purpose:
    channels and grid size are fixed by the model and input size, only the batch axis (never
    read here) is dynamic; the tracer's warning about it is silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return [int(d) for d in tensor.shape]


def split_level(output: torch.Tensor, num_anchors: int) -> torch.Tensor:
    """[N, A*(5+C), H, W] -> [N, A, H, W, 5+C]."""
    _, channels, h, w = _dims(output)
    per_anchor = channels // num_anchors
    if per_anchor * num_anchors != channels or per_anchor < 5:
        raise ValueError(f"head output has {output.shape[1]} channels, not a multiple A*(5+C) for A={num_anchors}")
    return output.reshape(-1, num_anchors, per_anchor, h, w).permute(0, 1, 3, 4, 2)


def decode_level(output: torch.Tensor, anchors: torch.Tensor, stride: int,
                 grid_xy_extend: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One level: raw logits [N, A, H, W, 5+C] and decoded xyxy boxes [N, A, H, W, 4] in input px.

    `anchors` is this level's [A, 2] (w, h).
    """
    raw = split_level(output, _dims(anchors)[0])
    _, _, h, w, _ = _dims(raw)
    dtype, device = raw.dtype, raw.device
    gy = torch.arange(h, dtype=dtype, device=device).view(1, 1, h, 1)
    gx = torch.arange(w, dtype=dtype, device=device).view(1, 1, 1, w)
    e = float(grid_xy_extend)
    cx = (torch.sigmoid(raw[..., 0]) * (1.0 + e) - e / 2.0 + gx) * float(stride)
    cy = (torch.sigmoid(raw[..., 1]) * (1.0 + e) - e / 2.0 + gy) * float(stride)
    anc = anchors.to(dtype=dtype, device=device)
    bw = anc[:, 0].view(1, -1, 1, 1) * torch.exp(raw[..., 2].clamp(max=MAX_LOG))
    bh = anc[:, 1].view(1, -1, 1, 1) * torch.exp(raw[..., 3].clamp(max=MAX_LOG))
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=-1)
    return raw, boxes


def decode_outputs(outputs: Sequence[torch.Tensor], anchors: torch.Tensor, strides: Sequence[int],
                   grid_xy_extend: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All levels: boxes [N, M, 4] xyxy input px, objectness [N, M], class_probs [N, M, C].

    Order of the M boxes: level, then cell row-major (y, x), then anchor (see the module doc).
    """
    if len(outputs) != len(strides) or len(outputs) != _dims(anchors)[0]:
        raise ValueError(f"{len(outputs)} head outputs, {len(strides)} strides and {anchors.shape[0]} anchor levels differ")
    all_boxes, all_obj, all_cls = [], [], []
    for level, output in enumerate(outputs):
        raw, boxes = decode_level(output, anchors[level], strides[level], grid_xy_extend)
        _, n_a, h, w, n_ch = _dims(raw)
        count = n_a * h * w
        # [N, A, H, W, .] -> [N, H, W, A, .] -> [N, H*W*A, .]
        raw = raw.permute(0, 2, 3, 1, 4).reshape(-1, count, n_ch)
        all_boxes.append(boxes.permute(0, 2, 3, 1, 4).reshape(-1, count, 4))
        all_obj.append(torch.sigmoid(raw[..., 4]))
        all_cls.append(torch.sigmoid(raw[..., 5:]))
    return torch.cat(all_boxes, 1), torch.cat(all_obj, 1), torch.cat(all_cls, 1)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def encode_box(box_xyxy, anchor_wh, cell_xy, stride: int,
               grid_xy_extend: float) -> tuple[float, float, float, float]:
    """The logits (tx, ty, tw, th) that decode to `box_xyxy` at cell (gx, gy) with this anchor.

    Exact inverse of decode_level when the box centre lies strictly inside the cell widened by
    e/2 on each side (always true strictly inside the cell itself); outside it no logit exists.
    """
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    aw, ah = (float(v) for v in anchor_wh)
    gx, gy = (float(v) for v in cell_xy)
    e = float(grid_xy_extend)
    out = []
    for centre, g in (((x1 + x2) / 2, gx), ((y1 + y2) / 2, gy)):
        p = (centre / stride - g + e / 2) / (1.0 + e)
        if not 0.0 < p < 1.0:
            raise ValueError(f"box centre {centre} is outside cell {int(g)} (stride {stride}); no logit decodes to it")
        out.append(_logit(p))
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"box {box_xyxy} has a non-positive size")
    out.append(math.log((x2 - x1) / aw))
    out.append(math.log((y2 - y1) / ah))
    return tuple(out)


def nms_per_class(boxes: torch.Tensor, scores: torch.Tensor, conf_threshold: float, iou_threshold: float,
                  top_k: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per-image detections [(boxes [K, 4], scores [K], labels [K] long)] from boxes [N, M, 4], scores [N, M, C].

    `scores` are objectness * class probability. Candidates are (box, class) pairs with
    score > conf_threshold (strict); NMS runs per class (torchvision batched_nms: a box suppresses
    a lower-scored box of the same class when their IoU > iou_threshold); at most top_k survive
    per class; the image's survivors are sorted by score, descending, and the first top_k kept.
    The ONNX export reproduces exactly this with NonMaxSuppression.
    """
    results = []
    num_classes = int(scores.shape[-1])
    for b in range(int(boxes.shape[0])):
        box_idx, labels = torch.nonzero(scores[b] > conf_threshold, as_tuple=True)
        cand_boxes = boxes[b][box_idx].float()
        cand_scores = scores[b][box_idx, labels].float()
        keep = torchvision.ops.batched_nms(cand_boxes, cand_scores, labels, float(iou_threshold))
        kept_labels = labels[keep]  # keep is sorted by score, descending
        onehot = torch.nn.functional.one_hot(kept_labels, num_classes)
        rank_in_class = (onehot.cumsum(0) * onehot).sum(1) - 1
        keep = keep[rank_in_class < top_k][:top_k]
        results.append((boxes[b][box_idx[keep]], scores[b][box_idx[keep], labels[keep]], labels[keep]))
    return results
