"""YOLOv4-tiny decoding: encode/decode round trip, output order, ONNX traceability, per-class NMS."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transferkit.tasks.detection.yolo_v4_tiny.decode import MAX_LOG, decode_outputs, encode_box, nms_per_class

ANCHORS = torch.tensor([[[81.0, 82.0], [135.0, 169.0], [344.0, 319.0]],
                        [[10.0, 14.0], [23.0, 27.0], [37.0, 58.0]]])
STRIDES = [32, 16]
E = 0.05
C = 3
A = 3



def head_outputs(n: int = 2, h0: int = 4, w0: int = 5, fill: float = 0.0) -> list[torch.Tensor]:
    """Level 0 grid h0 x w0 (stride 32), level 1 twice as fine (stride 16): a 128x160 input."""
    return [torch.full((n, A * (5 + C), h0, w0), fill), torch.full((n, A * (5 + C), 2 * h0, 2 * w0), fill)]


def flat_index(level: int, y: int, x: int, a: int, grids=((4, 5), (8, 10))) -> int:
    offset = sum(h * w * A for h, w in grids[:level])
    return offset + (y * grids[level][1] + x) * A + a


def test_decode_shapes_and_documented_order():
    outs = head_outputs(fill=-10.0)
    level, y, x, a, cls = 1, 3, 7, 2, 1
    base = a * (5 + C)
    outs[level][1, base + 4, y, x] = 10.0  # objectness of image 1 only
    outs[level][1, base + 5 + cls, y, x] = 10.0
    outs[level][1, base + 2:base + 4, y, x] = torch.tensor([0.0, 1.0])  # tw, th
    boxes, obj, probs = decode_outputs(outs, ANCHORS, STRIDES, E)
    m = (4 * 5 + 8 * 10) * A
    assert boxes.shape == (2, m, 4) and obj.shape == (2, m) and probs.shape == (2, m, C)
    idx = flat_index(level, y, x, a)
    assert idx == 20 * 3 + (3 * 10 + 7) * 3 + 2
    assert int(obj[1].argmax()) == idx and obj[1, idx] > 0.99 and obj[0].max() < 1e-4
    assert int(probs[1, idx].argmax()) == cls
    # tx = ty = -10 -> centre near the cell's top-left corner minus e/2; w = anchor w, h = anchor h * e
    cx = (torch.sigmoid(torch.tensor(-10.0)) * (1 + E) - E / 2 + x) * 16
    b = boxes[1, idx]
    assert (b[0] + b[2]) / 2 == pytest.approx(float(cx), abs=1e-4)
    assert float(b[2] - b[0]) == pytest.approx(37.0, rel=1e-5)
    assert float(b[3] - b[1]) == pytest.approx(58.0 * math.e, rel=1e-5)


def test_encode_then_decode_round_trip_at_the_documented_index():
    rng = np.random.default_rng(0)
    grids = ((4, 5), (8, 10))
    for _ in range(20):
        level = int(rng.integers(2))
        a = int(rng.integers(A))
        h, w = grids[level]
        gy, gx = int(rng.integers(h)), int(rng.integers(w))
        stride = STRIDES[level]
        cx = (gx + rng.uniform(0.01, 0.99)) * stride
        cy = (gy + rng.uniform(0.01, 0.99)) * stride
        bw, bh = rng.uniform(5, 300, size=2)
        box = [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]
        t = encode_box(box, ANCHORS[level, a].tolist(), (gx, gy), stride, E)
        outs = head_outputs(n=1)
        outs[level][0, a * (5 + C):a * (5 + C) + 4, gy, gx] = torch.tensor(t)
        boxes, _, _ = decode_outputs([o.double() for o in outs], ANCHORS.double(), STRIDES, E)
        np.testing.assert_allclose(boxes[0, flat_index(level, gy, gx, a)].numpy(), box, atol=1e-4)


def test_encode_rejects_a_centre_outside_its_cell():
    with pytest.raises(ValueError):
        encode_box([100, 0, 140, 20], [10, 10], (0, 0), 32, E)  # centre x = 120 is in cell 3


def test_width_logit_is_clamped():
    outs = head_outputs(n=1)
    outs[0][0, 2, 0, 0] = 1000.0  # tw of anchor 0, cell (0, 0)
    boxes, _, _ = decode_outputs(outs, ANCHORS, STRIDES, E)
    assert torch.isfinite(boxes).all()
    assert float(boxes[0, 0, 2] - boxes[0, 0, 0]) == pytest.approx(81.0 * math.exp(MAX_LOG), rel=1e-5)


class _Decoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("anchors", ANCHORS.clone())

    def forward(self, out0, out1):
        return decode_outputs([out0, out1], self.anchors, STRIDES, E)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy (dynamo=False) exporter
def test_decode_exports_to_onnx_with_a_dynamic_batch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "decode.onnx"
    example = tuple(t.normal_() for t in head_outputs(n=2))
    torch.onnx.export(_Decoder().eval(), example, str(path), dynamo=False, opset_version=17,
                      input_names=["out0", "out1"], output_names=["boxes", "obj", "probs"],
                      dynamic_axes={k: {0: "batch"} for k in ["out0", "out1", "boxes", "obj", "probs"]})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(0)
    for n in (1, 3):
        ins = [torch.randn(o.shape, generator=gen) * 3 for o in head_outputs(n=n)]
        got = session.run(None, {"out0": ins[0].numpy(), "out1": ins[1].numpy()})
        want = decode_outputs(ins, ANCHORS, STRIDES, E)
        assert got[0].shape == (n, 300, 4)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w.numpy(), atol=1e-4, rtol=1e-5)


# ---------------------------------------------------------------- nms_per_class

def _scores(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)[None]


def test_nms_suppresses_within_a_class_but_not_across_classes():
    boxes = torch.tensor([[[0, 0, 10, 10], [1, 0, 11, 10], [0, 1, 10, 11], [50, 50, 60, 60]]], dtype=torch.float32)
    scores = _scores([[0.9, 0.0], [0.8, 0.0], [0.0, 0.7], [0.6, 0.0]])
    (b, s, lab), = nms_per_class(boxes, scores, conf_threshold=0.1, iou_threshold=0.5, top_k=10)
    # box 1 (class 0) overlaps box 0 (class 0) with IoU 0.82 -> gone; box 2 is class 1 -> kept
    assert s.tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert lab.tolist() == [0, 1, 0]
    assert b.tolist() == [[0, 0, 10, 10], [0, 1, 10, 11], [50, 50, 60, 60]]


def test_nms_thresholds_are_strict():
    # IoU of these two is exactly 0.5 (overlap 50, union 100): equal to the threshold -> not suppressed
    boxes = torch.tensor([[[0, 0, 10, 10], [0, 0, 10, 5], [30, 30, 40, 40]]], dtype=torch.float32)
    scores = _scores([[0.9], [0.8], [0.5]])
    (_, s, _), = nms_per_class(boxes, scores, conf_threshold=0.5, iou_threshold=0.5, top_k=10)
    assert s.tolist() == pytest.approx([0.9, 0.8])  # score == conf_threshold is dropped
    (_, s, _), = nms_per_class(boxes, scores, conf_threshold=0.49, iou_threshold=0.49, top_k=10)
    assert s.tolist() == pytest.approx([0.9, 0.5])


def test_nms_top_k_per_class_and_per_image():
    far = torch.tensor([[20.0 * i, 0, 20.0 * i + 10, 10] for i in range(6)])
    boxes = torch.stack([far, far])
    scores = torch.zeros(2, 6, 2)
    scores[0, :, 0] = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    scores[0, 5, 1] = 0.95
    scores[1, 0, 1] = 0.3  # image 1: a single candidate
    res = nms_per_class(boxes, scores, conf_threshold=0.1, iou_threshold=0.5, top_k=3)
    assert len(res) == 2
    b0, s0, l0 = res[0]
    assert s0.tolist() == pytest.approx([0.95, 0.9, 0.8]) and l0.tolist() == [1, 0, 0]
    assert b0[0].tolist() == far[5].tolist()
    b1, s1, l1 = res[1]
    assert s1.tolist() == pytest.approx([0.3]) and l1.tolist() == [1] and b1.shape == (1, 4)
    # a large top_k keeps every survivor, sorted by score
    (_, s, _), _ = nms_per_class(boxes, scores, 0.1, 0.5, top_k=100)
    assert s.tolist() == pytest.approx([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])


def test_nms_with_nothing_above_threshold_returns_empty_tensors():
    boxes = torch.rand(2, 5, 4)
    (b, s, lab), _ = nms_per_class(boxes, torch.full((2, 5, 3), 0.01), 0.5, 0.5, 10)
    assert b.shape == (0, 4) and s.shape == (0,) and lab.shape == (0,) and lab.dtype == torch.long
