"""The deployable YOLOv4-tiny graph: network + box decoding + per-class NMS (ONNX NonMaxSuppression).

Its one output, `detections` [K, 7], lists every kept box of the batch as
(batch index, x1, y1, x2, y2, score, class) in network-input pixels, grouped by image then class,
best first within a class; at most `nms.top_k` boxes per class and image. ONNX Runtime alone runs it.

`check_detections` checks such a file in two parts, because comparing the final detections with
PyTorch's fails on near-tied scores: two overlapping boxes whose scores differ by 1e-6 swap order when
the CPU's kernels differ (AVX2, AVX-512, AMX), and NMS then keeps the other box. So (1) the graph's
NMS inputs, the decoded boxes and scores, must match PyTorch's within the tolerance, and (2) the
graph's NMS, run on those very inputs, must keep what greedy per-class NMS keeps, up to exact ties.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from ....engine.meta import ModelMeta
from ....errors import ModelError, first_line
from ...base import ExportGraph
from .decode import decode_outputs
from .module import DETECTION_COLUMNS, anchors_of
from .model import STRIDES

# On identical inputs the two NMS implementations can still disagree where scores tie exactly (either box
# may go first) or an IoU sits on the threshold (float32 rounding); these margins accept only that.
TIE_SCORE = 1e-6
TIE_IOU = 1e-5


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


def nms_inputs(outputs, anchors: torch.Tensor, grid_xy_extend: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw heads -> NMS candidates: boxes [N, M, 4] (xyxy, input px) and scores [N, C, M] (objectness * class)."""
    boxes, objectness, class_probs = decode_outputs(outputs, anchors, STRIDES, grid_xy_extend)
    return boxes, (objectness.unsqueeze(-1) * class_probs).transpose(1, 2)


class YoloWithNms(nn.Module):
    def __init__(self, net: nn.Module, meta: ModelMeta, nms):
        super().__init__()
        self.net = net
        self.meta = meta
        self.register_buffer("anchors", anchors_of(meta), persistent=False)
        self.grid_xy_extend = float(meta.arch["grid_xy_extend"])
        self.top_k, self.iou, self.conf = int(nms.top_k), float(nms.iou_threshold), float(nms.confidence_threshold)

    def candidates(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return nms_inputs(self.net(images), self.anchors, self.grid_xy_extend)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        boxes, scores = self.candidates(images)
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
    """The NMS graph in ONNX Runtime against the PyTorch pipeline on `probe` images (see the module doc).

    Decoded box corners are compared as a fraction of the input size (of the corner itself where it lies
    farther out), scores absolutely, both within `atol`; the graph's detections must be exactly its NMS
    selection of its own candidates, and that selection a valid greedy NMS under `spec.nms`.
    """
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            candidates = nms_inputs(net(probe), anchors_of(meta).to(probe.device), meta.arch["grid_xy_extend"])
            want_boxes, want_scores = (t.float().cpu().numpy() for t in candidates)
    finally:
        net.train(was_training)
    rows, boxes, scores, selected = _run_with_nms_inputs(Path(onnx_path), probe.cpu().numpy())
    if boxes.shape != want_boxes.shape or scores.shape != want_scores.shape:
        raise ModelError(f"{onnx_path}: its NMS takes boxes {boxes.shape} and scores {scores.shape}; the PyTorch model "
                         f"decodes {want_boxes.shape} and {want_scores.shape}: re-export the checkpoint")
    scale = np.maximum(float(max(probe.shape[-2:])), np.abs(want_boxes))
    box_diff = float(np.max(np.abs(boxes - want_boxes) / scale, initial=0.0))
    score_diff = float(np.max(np.abs(scores - want_scores), initial=0.0))
    if not (box_diff <= atol and score_diff <= atol):  # written so that NaN fails
        raise ModelError(f"{onnx_path} does not reproduce the PyTorch box decoding: max box difference {box_diff:.3g} "
                         f"(fraction of the input size), max score difference {score_diff:.3g}, atol {atol} "
                         "(export.parity_tolerance)")
    _check_rows(onnx_path, rows, boxes, scores, selected)
    nms = spec.nms
    for b in range(scores.shape[0]):
        for c in range(scores.shape[1]):
            chosen = selected[(selected[:, 0] == b) & (selected[:, 1] == c), 2]
            problem = nms_violation(boxes[b], scores[b, c], chosen, nms.confidence_threshold, nms.iou_threshold,
                                    nms.top_k)
            if problem:
                raise ModelError(f"{onnx_path}: the graph's NMS differs from nms (confidence_threshold "
                                 f"{nms.confidence_threshold}, iou_threshold {nms.iou_threshold}, top_k {nms.top_k}) "
                                 f"on probe image {b}, class {c}: {problem}")
    return {"max_abs_diff": max(box_diff, score_diff), "box_diff": box_diff, "score_diff": score_diff, "ok": True,
            "atol": atol, "batch": int(len(probe)), "detections": int(len(rows)),
            "compared": "decoded boxes and scores, then NMS on the graph's own candidates"}


def _run_with_nms_inputs(onnx_path: Path, images: np.ndarray) -> tuple[np.ndarray, ...]:
    """The graph's detections [K, 7], plus its NonMaxSuppression node's boxes [N, M, 4], scores [N, C, M] and
    selected indices [K, 3], read out by adding them as outputs to an in-memory copy of the graph."""
    import onnx
    import onnxruntime as ort

    from ....optimize.runtime import default_providers

    try:
        proto = onnx.load(str(onnx_path))
    except Exception as e:
        raise ModelError(f"{onnx_path} is not a readable ONNX model: {first_line(e)}") from e
    nodes = [n for n in proto.graph.node if n.op_type == "NonMaxSuppression"]
    if len(nodes) != 1 or len(proto.graph.output) != 1:
        raise ModelError(f"{onnx_path}: expected one output and one NonMaxSuppression node, found "
                         f"{len(proto.graph.output)} and {len(nodes)}; export it with export.include_nms=true")
    wanted = [proto.graph.output[0].name, nodes[0].input[0], nodes[0].input[1], nodes[0].output[0]]
    for name in wanted[1:]:
        proto.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=default_providers())
        rows, boxes, scores, selected = session.run(wanted, {session.get_inputs()[0].name: images.astype(np.float32)})
    except Exception as e:  # ORT raises its own exception types
        raise ModelError(f"ONNX Runtime cannot run {onnx_path} on the probe images: {first_line(e)}") from e
    if rows.ndim != 2 or rows.shape[1] != DETECTION_COLUMNS:
        raise ModelError(f"{onnx_path}: expected detections [K, {DETECTION_COLUMNS}], got shape {rows.shape}")
    if boxes.ndim != 3 or scores.ndim != 3 or selected.ndim != 2 or selected.shape[1] != 3:
        raise ModelError(f"{onnx_path}: its NonMaxSuppression node has inputs {boxes.shape}, {scores.shape} and "
                         f"output {selected.shape}, not [N, M, 4], [N, C, M] and [K, 3]")
    return rows, boxes, scores, selected.astype(np.int64)


def _check_rows(onnx_path, rows: np.ndarray, boxes: np.ndarray, scores: np.ndarray, selected: np.ndarray) -> None:
    """Each detection row must be its selected candidate, copied: the gather is exact, so equality is exact."""
    n, c, m = scores.shape
    if len(selected) and not ((selected >= 0).all() and (selected < [n, c, m]).all()):
        raise ModelError(f"{onnx_path}: its NonMaxSuppression selected indices outside boxes [{n}, {m}, 4] "
                         f"and scores [{n}, {c}, {m}]")
    b, k, i = selected.T
    expected = np.concatenate([b[:, None], boxes[b, i], scores[b, k, i][:, None], k[:, None]], axis=1)
    if rows.shape != expected.shape or not np.array_equal(rows, expected.astype(rows.dtype)):
        raise ModelError(f"{onnx_path}: its detections are not the boxes and scores its NMS selected "
                         f"({len(rows)} rows, {len(selected)} selected): the gather after NMS is wrong")


def nms_violation(boxes: np.ndarray, scores: np.ndarray, chosen: np.ndarray, confidence_threshold: float,
                  iou_threshold: float, top_k: int) -> str | None:
    """Why `chosen` (indices into boxes [M, 4] and scores [M]) is not what greedy NMS keeps, or None.

    Greedy NMS keeps, best score first, every box with score > confidence_threshold that overlaps
    (IoU > iou_threshold) no box kept before it, up to top_k. A set is that result exactly when its
    boxes overlap no other kept box and every candidate left out either overlaps a kept box scoring
    at least as high or fell below the top_k cut. Scores within TIE_SCORE count as tied and IoUs within
    TIE_IOU of the threshold as on it, so either choice passes there.
    """
    chosen = np.asarray(chosen, dtype=np.int64)
    if len(chosen) > top_k:
        return f"{len(chosen)} boxes kept, more than top_k"
    if len(np.unique(chosen)) != len(chosen):
        return "a box is kept twice"
    box64, score64 = torch.from_numpy(boxes.astype(np.float64)), scores.astype(np.float64)
    kept_scores = score64[chosen]
    if len(chosen) and kept_scores.min() <= confidence_threshold - TIE_SCORE:
        return f"box {int(chosen[np.argmin(kept_scores)])} kept with score {kept_scores.min():.6g}, below the threshold"
    iou = torchvision.ops.box_iou(box64[chosen], box64).numpy()  # [kept, M]
    overlap = iou[:, chosen] - np.eye(len(chosen))
    if len(chosen) and overlap.max() > iou_threshold + TIE_IOU:
        k, j = np.unravel_index(np.argmax(overlap), overlap.shape)
        return f"boxes {int(chosen[k])} and {int(chosen[j])} both kept with IoU {overlap[k, j]:.4f}"
    left_out = np.ones(len(scores), dtype=bool)
    left_out[chosen] = False
    left_out &= score64 > confidence_threshold + TIE_SCORE
    if len(chosen) == top_k:  # candidates below the cut need no suppressor
        left_out &= score64 > kept_scores.min() + TIE_SCORE
    suppressed = ((iou > iou_threshold - TIE_IOU) & (kept_scores[:, None] >= score64[None, :] - TIE_SCORE)).any(0)
    missing = np.flatnonzero(left_out & ~suppressed)
    if len(missing):
        j = int(missing[np.argmax(score64[missing])])
        return f"box {j} (score {score64[j]:.6g}) dropped although no kept box at least as good overlaps it"
    return None
