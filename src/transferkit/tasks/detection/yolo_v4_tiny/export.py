"""The deployable YOLOv4-tiny graph: network + box decoding + per-class NMS (ONNX NonMaxSuppression).

Its one output, `detections` [K, 7], lists every kept box of the batch as
(batch index, x1, y1, x2, y2, score, class) in network-input pixels, grouped by image then class,
best first within a class; at most `nms.top_k` boxes per class and image. ONNX Runtime alone runs it.
"""
from __future__ import annotations

import numpy as np
import torch
import torchvision
from torch import nn

from ....engine.meta import ModelMeta
from ....errors import ModelError
from ...base import ExportGraph
from .decode import decode_outputs
from .module import DETECTION_COLUMNS, anchors_of, detections_from_outputs, rows_to_detections
from .model import STRIDES

SCORE_MARGIN = 1e-4


class _NonMaxSuppression(torch.autograd.Function):
    """boxes [N, M, 4], scores [N, C, M] -> selected (batch, class, box) indices [K, 3], as ONNX's operator."""

    @staticmethod
    def forward(ctx, boxes, scores, max_per_class: int, iou_threshold: float, score_threshold: float):
        rows = []
        for b in range(boxes.shape[0]):
            for c in range(scores.shape[1]):
                candidates = torch.nonzero(scores[b, c] > score_threshold).flatten()
                keep = torchvision.ops.nms(boxes[b, candidates], scores[b, c, candidates], iou_threshold)
                chosen = candidates[keep[:max_per_class]]
                rows.append(torch.stack([torch.full_like(chosen, b), torch.full_like(chosen, c), chosen], dim=1))
        return torch.cat(rows) if rows else torch.zeros((0, 3), dtype=torch.long)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou_threshold, score_threshold):
        # center_point_box=0: corners. ONNX names them y1, x1, y2, x2; IoU is the same for x1, y1, x2, y2.
        return g.op("NonMaxSuppression", boxes, scores,
                    g.op("Constant", value_t=torch.tensor([max_per_class], dtype=torch.long)),
                    g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float)),
                    g.op("Constant", value_t=torch.tensor([score_threshold], dtype=torch.float)),
                    center_point_box_i=0)


class YoloWithNms(nn.Module):
    def __init__(self, net: nn.Module, meta: ModelMeta, nms):
        super().__init__()
        self.net = net
        self.meta = meta
        self.register_buffer("anchors", anchors_of(meta), persistent=False)
        self.grid_xy_extend = float(meta.arch["grid_xy_extend"])
        self.top_k, self.iou, self.conf = int(nms.top_k), float(nms.iou_threshold), float(nms.confidence_threshold)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        boxes, objectness, class_probs = decode_outputs(self.net(images), self.anchors, STRIDES, self.grid_xy_extend)
        scores = (objectness.unsqueeze(-1) * class_probs).transpose(1, 2)  # [N, C, M]
        num_classes, count = int(scores.shape[1]), int(scores.shape[2])
        selected = _NonMaxSuppression.apply(boxes, scores, self.top_k, self.iou, self.conf)
        b, c, i = selected[:, 0], selected[:, 1], selected[:, 2]
        kept_boxes = boxes.reshape(-1, 4).index_select(0, b * count + i)
        kept_scores = scores.reshape(-1).index_select(0, (b * num_classes + c) * count + i)
        return torch.cat([b.unsqueeze(1).to(boxes.dtype), kept_boxes, kept_scores.unsqueeze(1),
                          c.unsqueeze(1).to(boxes.dtype)], dim=1)


def export_graph(net: nn.Module, meta: ModelMeta, spec) -> ExportGraph:
    if not spec.export.include_nms:
        return ExportGraph(net, ("big", "mid"), {"onnx_graph": "raw_heads"})
    nms = spec.nms.model_dump()
    # INT8 quantises the convolutions only: box corners and scores stay float (quantising the decoder's
    # arithmetic to 8 bits collapsed the small scores mAP ranks by).
    return ExportGraph(YoloWithNms(net, meta, spec.nms).eval(), ("detections",), {"onnx_graph": "nms", "nms": nms},
                       output_axes={"detections": {0: "num_detections"}}, int8_op_types=("Conv",))


def check_detections(spec, net: nn.Module, onnx_path, probe: torch.Tensor, meta: ModelMeta, atol: float) -> dict:
    """The NMS graph in ONNX Runtime against the PyTorch pipeline (network, decode, nms_per_class) on images:
    the same number of boxes per image and class, each paired with its closest counterpart (near-equal
    scores may swap places); scores, and corners as a fraction of the input size, within `atol`."""
    from ....optimize.runtime import OnnxModel

    was_training = net.training
    net.eval()
    with torch.inference_mode():
        expected = detections_from_outputs(list(net(probe)), meta, spec.nms, len(probe))
    net.train(was_training)
    rows = OnnxModel(onnx_path)(probe.numpy().astype(np.float32))[0]
    if rows.ndim != 2 or rows.shape[1] != DETECTION_COLUMNS:
        raise ModelError(f"{onnx_path}: expected detections [K, {DETECTION_COLUMNS}], got shape {rows.shape}")
    got = rows_to_detections(torch.from_numpy(rows), len(probe), spec.nms.top_k)
    # Boxes scoring within a hair of the threshold may fall on either side of it in either runtime.
    floor = spec.nms.confidence_threshold + SCORE_MARGIN
    scale = float(max(probe.shape[-2:]))  # box corners are compared as a fraction of the input size
    worst, mismatched, total = 0.0, 0, 0
    for (eb, es, el), (gb, gs, gl) in zip(expected, got):
        eb, es, el = eb[es > floor] / scale, es[es > floor], el[es > floor]
        gb, gs, gl = gb[gs > floor] / scale, gs[gs > floor], gl[gs > floor]
        total += len(eb)
        if len(eb) != len(gb) or not torch.equal(torch.sort(el.cpu()).values, torch.sort(gl).values):
            mismatched += 1
            continue
        worst = max(worst, _matched_difference(torch.cat([eb, es[:, None]], 1).cpu(), el.cpu(),
                                               torch.cat([gb, gs[:, None]], 1), gl))
    ok = mismatched == 0 and worst <= atol
    result = {"max_abs_diff": worst, "ok": ok, "atol": atol, "batch": int(len(probe)), "detections": total,
              "images_with_different_detections": mismatched, "compared": "detections after NMS"}
    if not ok:
        raise ModelError(f"{onnx_path} does not reproduce the PyTorch detections: {mismatched} of {len(probe)} images "
                         f"differ in count or classes, max box/score difference {worst:.3g} (atol {atol})")
    return result


def _matched_difference(expected: torch.Tensor, labels_e: torch.Tensor, got: torch.Tensor, labels_g: torch.Tensor) -> float:
    """Largest |difference| over detections [K, 5] paired greedily, class by class, closest first."""
    worst = 0.0
    for c in torch.unique(labels_e):
        e, g = expected[labels_e == c], got[labels_g == c]
        distance = (e[:, None, :] - g[None, :, :]).abs().amax(-1)
        for _ in range(len(e)):
            flat = int(torch.argmin(distance))
            i, j = divmod(flat, distance.shape[1])
            worst = max(worst, float(distance[i, j]))
            distance[i, :], distance[:, j] = float("inf"), float("inf")
    return worst

