"""YOLOv4-tiny loss: CIoU values and gradients, positives, ignore band, smoothing, a short fit."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from transferkit.errors import DataError
from transferkit.tasks.detection.yolo_v4_tiny.decode import decode_outputs, encode_box
from transferkit.tasks.detection.yolo_v4_tiny.loss import ciou, yolo_loss
from transferkit.tasks.detection.yolo_v4_tiny.spec import YoloLossConfig

# a 128 x 128 input: level 0 is 4x4 (stride 32), level 1 is 8x8 (stride 16)
ANCHORS = torch.tensor([[[40.0, 44.0], [60.0, 70.0], [100.0, 90.0]],
                        [[10.0, 12.0], [18.0, 22.0], [28.0, 30.0]]])
STRIDES = [32, 16]
C = 2
A = 3
GT1 = ([10.0, 20.0, 50.0, 60.0], 0)  # 40x40, centre (30, 40): level 0 cell y=1, x=0, best anchor (40,44)
GT2 = ([70.0, 60.0, 100.0, 110.0], 1)  # 30x50, centre (85, 85): level 0 cell y=2, x=2, best anchor (40,44)



def heads(n: int = 1, seed: int = 0, scale: float = 0.5) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, A * (5 + C), 4, 4, generator=gen) * scale,
            torch.randn(n, A * (5 + C), 8, 8, generator=gen) * scale]


def gt_of(*images) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.tensor([b for b, _ in objs], dtype=torch.float32).reshape(-1, 4),
             torch.tensor([c for _, c in objs], dtype=torch.long)) for objs in images]


# ---------------------------------------------------------------- ciou

def test_ciou_of_identical_boxes_is_one():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 7.0, 6.0, 100.0]])
    torch.testing.assert_close(ciou(boxes, boxes), torch.ones(2), atol=1e-6, rtol=0)


def test_ciou_hand_computed_values():
    # [0,0,2,2] vs [1,0,4,2]: overlap 2, union 8 -> IoU 1/4; centres (1,1), (2.5,1) -> d^2 = 2.25;
    # enclosing box 4x2 -> c^2 = 20; v = 4/pi^2 (atan(3/2) - atan(1))^2; alpha = v / (1 - 1/4 + v)
    v = 4 / math.pi ** 2 * (math.atan(1.5) - math.atan(1.0)) ** 2
    expected = 0.25 - 2.25 / 20 - v / (0.75 + v) * v
    got = ciou(torch.tensor([0.0, 0.0, 2.0, 2.0]), torch.tensor([1.0, 0.0, 4.0, 2.0]))
    assert float(got) == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.137174, abs=1e-6)
    # same shape, diagonal shift: IoU 1/7, d^2 = 2, c^2 = 18, v = 0
    got = ciou(torch.tensor([0.0, 0.0, 2.0, 2.0]), torch.tensor([1.0, 1.0, 3.0, 3.0]))
    assert float(got) == pytest.approx(1 / 7 - 2 / 18, abs=1e-6)
    # disjoint boxes go below zero (the distance term keeps a gradient)
    assert float(ciou(torch.tensor([0.0, 0.0, 1.0, 1.0]), torch.tensor([5.0, 5.0, 6.0, 6.0]))) < 0


def test_ciou_gradients_are_finite_for_degenerate_boxes():
    pred = torch.tensor([[3.0, 3.0, 3.0, 3.0], [0.0, 0.0, 0.0, 5.0], [1.0, 1.0, 4.0, 4.0], [2.0, 2.0, 2.0, 2.0]],
                        requires_grad=True)
    target = torch.tensor([[3.0, 3.0, 3.0, 3.0], [0.0, 0.0, 4.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 4.0, 4.0]])
    value = ciou(pred, target)
    assert torch.isfinite(value).all()
    (1 - value).sum().backward()
    assert torch.isfinite(pred.grad).all()


# ---------------------------------------------------------------- yolo_loss

def test_loss_with_no_gt_is_the_objectness_term_only():
    outs = [o.requires_grad_() for o in heads(n=2)]
    res = yolo_loss(outs, gt_of([], []), ANCHORS, STRIDES, C)
    assert all(torch.isfinite(res[k]) for k in ("total", "box", "obj", "cls"))
    assert res["box"].item() == 0.0 and res["cls"].item() == 0.0 and int(res["num_positives"]) == 0
    expected = sum(F.binary_cross_entropy_with_logits(o.reshape(2, A, 5 + C, *o.shape[2:])[:, :, 4],
                                                      torch.zeros(2, A, *o.shape[2:]), reduction="sum")
                   for o in outs) / 2
    assert res["total"].item() == pytest.approx(expected.item(), rel=1e-5)
    res["total"].backward()
    assert all(torch.isfinite(o.grad).all() for o in outs)
    # one empty image next to one with boxes
    res = yolo_loss(heads(n=2), gt_of([GT1], []), ANCHORS, STRIDES, C)
    assert torch.isfinite(res["total"]) and int(res["num_positives"]) > 0


def test_positive_count_follows_box_matching_iou():
    gt = gt_of([GT1, GT2])
    strict = yolo_loss(heads(), gt, ANCHORS, STRIDES, C, YoloLossConfig(box_matching_iou=0.99))
    assert int(strict["num_positives"]) == 2
    # GT1 also matches (60,70) 0.381 and (28,30) 0.525 (not (18,22) at 0.2475);
    # GT2 also matches (60,70) 0.357, (28,30) 0.56 and (18,22) 0.264 -> 3 + 4
    default = yolo_loss(heads(), gt, ANCHORS, STRIDES, C, YoloLossConfig())
    assert int(default["num_positives"]) == 7


def _set_box(outs, level, y, x, a, box):
    t = encode_box(box, ANCHORS[level, a].tolist(), (x, y), STRIDES[level], 0.05)
    outs[level][0, a * (5 + C):a * (5 + C) + 4, y, x] = torch.tensor(t)


def test_box_term_vanishes_when_the_positive_predicts_its_gt():
    cfg = YoloLossConfig(box_matching_iou=0.99)
    outs = heads()
    _set_box(outs, 0, 1, 0, 0, GT1[0])
    _set_box(outs, 0, 2, 2, 0, GT2[0])
    assert float(yolo_loss(outs, gt_of([GT1, GT2]), ANCHORS, STRIDES, C, cfg)["box"]) == pytest.approx(0.0, abs=1e-4)
    outs[0][0, 0, 1, 0] += 1.0  # move GT1's prediction
    assert float(yolo_loss(outs, gt_of([GT1, GT2]), ANCHORS, STRIDES, C, cfg)["box"]) > 0.1


def test_negatives_overlapping_a_gt_are_ignored_by_objectness():
    # anchor 1 of GT1's cell is no positive at box_matching_iou 0.99; make it predict GT1 exactly
    outs = heads()
    _set_box(outs, 0, 1, 0, 1, GT1[0])
    obj_channel = 1 * (5 + C) + 4
    for neutral, ignored in ((0.5, True), (1.0, False)):
        leaf = [o.clone().requires_grad_() for o in outs]
        res = yolo_loss(leaf, gt_of([GT1]), ANCHORS, STRIDES, C,
                        YoloLossConfig(box_matching_iou=0.99, matching_neutral_box_iou=neutral))
        res["obj"].backward()
        assert (float(leaf[0].grad[0, obj_channel, 1, 0]) == 0.0) == ignored
        assert float(leaf[0].grad[0, obj_channel, 3, 3]) > 0  # a far negative still learns "no object"


def test_class_term_uses_smoothed_one_hot_targets():
    outs = heads(seed=3, scale=2.0)
    ls = 0.2
    res = yolo_loss(outs, gt_of([GT1, GT2]), ANCHORS, STRIDES, C,
                    YoloLossConfig(box_matching_iou=0.99, label_smoothing=ls, cls_weight=2.0))
    logits = torch.stack([outs[0][0, 5:7, 1, 0], outs[0][0, 5:7, 2, 2]])
    targets = torch.tensor([[1 - ls / 2, ls / 2], [ls / 2, 1 - ls / 2]])
    expected = 2.0 * F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
    assert float(res["cls"]) == pytest.approx(float(expected), rel=1e-5)
    assert float(res["total"]) == pytest.approx(float(res["box"] + res["obj"] + res["cls"]), rel=1e-6)


def test_label_out_of_range_is_a_data_error():
    with pytest.raises(DataError, match="outside 0..1"):
        yolo_loss(heads(), gt_of([([0.0, 0.0, 10.0, 10.0], 5)]), ANCHORS, STRIDES, C)


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    inter = (torch.minimum(a[2:], b[2:]) - torch.maximum(a[:2], b[:2])).clamp(min=0).prod()
    return float(inter / ((a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter))


def test_a_few_adam_steps_fit_two_boxes():
    params = [torch.nn.Parameter(o) for o in heads(seed=1)]
    gt = gt_of([GT1, GT2])
    opt = torch.optim.Adam(params, lr=0.05)
    first = None
    for _ in range(40):
        loss = yolo_loss(params, gt, ANCHORS, STRIDES, C)["total"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = yolo_loss(params, gt, ANCHORS, STRIDES, C)["total"].item()
    assert last < 0.5 * first, (first, last)
    with torch.no_grad():
        boxes, obj, probs = decode_outputs(params, ANCHORS, STRIDES, 0.05)
    for box, label in (GT1, GT2):
        best = int((obj[0] * probs[0, :, label]).argmax())
        assert _iou(boxes[0, best], torch.tensor(box)) > 0.5
