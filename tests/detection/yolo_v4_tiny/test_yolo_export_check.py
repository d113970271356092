"""The check of the NMS export (check_detections): it catches a wrong graph, and only ties pass as differences.

Each graph here is a tiny stand-in network (avg-pool + 1x1 convs, or constant heads) wrapped in YoloWithNms,
exported to ONNX and checked against the correct network, as `tkit yolo_v4_tiny export` does.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from transferkit.errors import ModelError
from transferkit.engine.meta import ModelMeta, image_input
from transferkit.optimize import export_onnx
from transferkit.tasks.detection.yolo_v4_tiny.export import (
    YoloWithNms, _NonMaxSuppression, check_detections, export_graph, nms_violation)
from transferkit.tasks.detection.yolo_v4_tiny.module import detections_from_outputs
from transferkit.tasks.detection.yolo_v4_tiny.spec import YoloSpec

pytestmark = [pytest.mark.export, pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")]

SIZE, C, A = 64, 3, 3  # 64 px input: a 2x2 grid at stride 32, 4x4 at stride 16 -> 60 boxes
META = ModelMeta(task="yolo_v4_tiny", classes=("a", "b", "c"), backbone=None,
                 inputs=(image_input(SIZE, SIZE, (0.0,) * 3, (1.0,) * 3),),
                 arch={"big_anchor_shape": [[24.0, 24.0], [32.0, 40.0], [48.0, 48.0]],
                       "mid_anchor_shape": [[8.0, 10.0], [16.0, 16.0], [20.0, 24.0]], "grid_xy_extend": 0.05})


class PooledHeads(nn.Module):
    """Head outputs [N, A*(5+C), H, W] at strides 32 and 16 that depend on the image."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.big, self.mid = nn.Conv2d(3, A * (5 + C), 1), nn.Conv2d(3, A * (5 + C), 1)
        for conv in (self.big, self.mid):
            nn.init.normal_(conv.weight, std=2.0)
            nn.init.normal_(conv.bias, std=1.0)

    def forward(self, images):
        return [self.big(nn.functional.avg_pool2d(images, 32)), self.mid(nn.functional.avg_pool2d(images, 16))]


class ConstantHeads(nn.Module):
    """Fixed head logits (whatever the image), for hand-made candidates."""

    def __init__(self, big: torch.Tensor, mid: torch.Tensor):
        super().__init__()
        self.register_buffer("big", big)
        self.register_buffer("mid", mid)

    def forward(self, images):
        zero = images[:, :1, :1, :1] * 0.0  # [N, 1, 1, 1]: carries the batch size into the graph
        return [self.big + zero, self.mid + zero]


class Broken(YoloWithNms):
    """The NMS graph with one deliberate mistake."""

    def __init__(self, net, mistake: str, nms):
        super().__init__(net, META, nms)
        self.mistake = mistake

    def candidates(self, images):
        boxes, scores = super().candidates(images)
        if self.mistake == "decode":  # x and y swapped
            boxes = boxes[..., [1, 0, 3, 2]]
        elif self.mistake == "class_offset":  # each class scored with its neighbour's probability
            scores = scores.roll(1, dims=1)
        elif self.mistake == "sigmoid":  # class logits used as probabilities
            raw = [o.reshape(o.shape[0], A, 5 + C, *o.shape[2:]) for o in self.net(images)]
            objectness = torch.cat([torch.sigmoid(r[:, :, 4]).permute(0, 2, 3, 1).reshape(r.shape[0], -1)
                                    for r in raw], 1)
            logits = torch.cat([r[:, :, 5:].permute(0, 3, 4, 1, 2).reshape(r.shape[0], -1, C) for r in raw], 1)
            scores = (objectness.unsqueeze(-1) * logits).transpose(1, 2)
        return boxes, scores

    def forward(self, images):
        if self.mistake != "gather":
            return super().forward(images)
        boxes, scores = self.candidates(images)
        selected = _NonMaxSuppression.apply(boxes, scores, self.top_k, self.iou, self.conf)
        b, c, i = selected[:, 0], selected[:, 1], selected[:, 2]
        count = int(scores.shape[2])
        wrong = (c + 1) % C  # the score of another class than the row says
        kept_scores = scores.reshape(-1).index_select(0, (b * C + wrong) * count + i)
        kept_boxes = boxes.reshape(-1, 4).index_select(0, b * count + i)
        return torch.cat([b.unsqueeze(1).float(), kept_boxes, kept_scores.unsqueeze(1), c.unsqueeze(1).float()], 1)


def spec(**nms) -> YoloSpec:
    return YoloSpec.model_validate({"nms": nms})


def export(module: nn.Module, path) -> str:
    return export_onnx(module.eval(), path, META.inputs, output_names=("detections",),
                       output_axes={"detections": {0: "num_detections"}})


def probe(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def net():
    return PooledHeads().eval()


def test_a_correct_export_passes_with_its_differences_reported(net, tmp_path):
    s = spec()
    path = export(export_graph(net, META, s).module, tmp_path / "m.onnx")
    result = check_detections(s, net, path, probe(), META, atol=1e-3)
    assert result["ok"] and result["detections"] > 0 and result["batch"] == 4
    assert result["box_diff"] < 1e-4 and result["score_diff"] < 1e-4


@pytest.mark.parametrize("mistake, message", [
    ("decode", "box decoding"), ("class_offset", "box decoding"), ("sigmoid", "box decoding"),
    ("gather", "gather after NMS is wrong")])
def test_a_wrong_graph_is_caught(net, tmp_path, mistake, message):
    s = spec()
    path = export(Broken(net, mistake, s.nms), tmp_path / "m.onnx")
    with pytest.raises(ModelError, match=message):
        check_detections(s, net, path, probe(), META, atol=1e-3)


@pytest.mark.parametrize("baked", [{"iou_threshold": 0.3}, {"iou_threshold": 0.8}, {"confidence_threshold": 0.3},
                                   {"top_k": 2}])
def test_nms_with_other_settings_than_the_spec_is_caught(net, tmp_path, baked):
    path = export(YoloWithNms(net, META, spec(**baked).nms), tmp_path / "m.onnx")
    with pytest.raises(ModelError, match="the graph's NMS differs"):
        check_detections(spec(), net, path, probe(), META, atol=1e-3)


def tied_heads(extra_logit: float = 0.0) -> ConstantHeads:
    """Two candidates of class 0 in one stride-16 cell: anchors 16x16 and 20x24 on the same centre
    (IoU 0.53), objectness logits 2.0 and 2.0 + extra_logit; every other box scores ~1e-9."""
    big = torch.full((1, A * (5 + C), 2, 2), -20.0)
    mid = torch.full((1, A * (5 + C), 4, 4), -20.0)
    for a in range(A):
        mid[0, a * (5 + C):a * (5 + C) + 4] = 0.0  # centred in its cell, anchor-sized
    for a, logit in ((1, 2.0), (2, 2.0 + extra_logit)):
        mid[0, a * (5 + C) + 4, 1, 2] = logit
        mid[0, a * (5 + C) + 5, 1, 2] = 6.0  # class 0
    return ConstantHeads(big, mid).eval()


def test_a_near_tie_that_nms_breaks_the_other_way_passes(tmp_path):
    """The PyTorch model scores box 1 a hair above box 2; the exported one a hair below (as other CPU kernels
    may): each runtime keeps a different box of the pair, and the check accepts it."""
    torch_net, onnx_net = tied_heads(-4e-6), tied_heads(+4e-6)  # scores ~1e-6 apart, either way
    s = spec()
    path = export(YoloWithNms(onnx_net, META, s.nms), tmp_path / "m.onnx")
    images = probe(2)
    with torch.inference_mode():
        [(pt_boxes, pt_scores, _), _] = detections_from_outputs(torch_net(images), META, s.nms, 2)
    from transferkit.optimize import OnnxModel

    rows = OnnxModel(path)(images.numpy())[0]
    onnx_boxes = rows[rows[:, 0] == 0][:, 1:5]
    assert len(pt_boxes) == len(onnx_boxes) == 1
    assert np.abs(pt_boxes.numpy() - onnx_boxes).max() > 1.0  # a different box kept, not a rounding
    result = check_detections(s, torch_net, path, images, META, atol=1e-3)
    assert result["ok"] and result["score_diff"] < 1e-5


def test_a_score_difference_beyond_the_tolerance_is_not_a_tie(tmp_path):
    s = spec()
    path = export(YoloWithNms(tied_heads(+0.1), META, s.nms), tmp_path / "m.onnx")
    with pytest.raises(ModelError, match="max score difference"):
        check_detections(s, tied_heads(-0.1), path, probe(2), META, atol=1e-3)


def test_nms_validity_accepts_either_answer_of_an_exact_tie_only():
    """A overlaps B, B overlaps C, A and C do not. With A and B tied, greedy NMS keeps {B} or {A, C}
    depending on which goes first; with A clearly below B only {B} is right."""
    boxes = np.array([[0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]], np.float32)  # IoU(A,B)=IoU(B,C)=0.54
    tied = np.array([0.9, 0.9, 0.5], np.float32)
    args = dict(confidence_threshold=0.001, iou_threshold=0.5, top_k=10)
    assert nms_violation(boxes, tied, np.array([1]), **args) is None
    assert nms_violation(boxes, tied, np.array([0, 2]), **args) is None
    ordered = np.array([0.8, 0.9, 0.5], np.float32)
    assert nms_violation(boxes, ordered, np.array([1]), **args) is None
    assert "dropped" in nms_violation(boxes, ordered, np.array([0, 2]), **args)
    assert "both kept" in nms_violation(boxes, ordered, np.array([0, 1]), **args)
    high = {**args, "confidence_threshold": 0.95}
    assert "below the threshold" in nms_violation(boxes, ordered, np.array([1]), **high)
    assert nms_violation(boxes, ordered, np.array([1]), **{**args, "top_k": 1}) is None
