"""YOLOv4-tiny target assignment: best anchor and cell per level, extra positives, collisions."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from transferkit.tasks.detection.yolo_v4_tiny.anchors import iou_wh
from transferkit.tasks.detection.yolo_v4_tiny.targets import build_targets

ANCHORS = torch.tensor([[[81.0, 82.0], [135.0, 169.0], [344.0, 319.0]],
                        [[10.0, 14.0], [23.0, 27.0], [37.0, 58.0]]])
STRIDES = [32, 16]
GRIDS = [(8, 8), (16, 16)]  # a 256 x 256 input



def box_at(cx: float, cy: float, w: float, h: float) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def gt_of(*images) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each image: a list of (box, label)."""
    out = []
    for objs in images:
        boxes = torch.tensor([b for b, _ in objs], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([lab for _, lab in objs], dtype=torch.long)
        out.append((boxes, labels))
    return out


def positives(targets) -> set[tuple[int, int, int, int, int]]:
    """{(level, image, anchor, y, x)} of every positive."""
    found = set()
    for level, t in enumerate(targets):
        for idx in torch.nonzero(t["positive"]).tolist():
            found.add((level, *idx))
    return found


def test_big_box_goes_to_level_0_best_anchor_and_cell():
    # 140x170: IoU 0.959 with (135,169), 0.279 with (81,82), 0.217 with (344,319), < 0.1 on level 1
    box = box_at(100, 120, 140, 170)
    t = build_targets(gt_of([(box, 2)]), ANCHORS, STRIDES, GRIDS, box_matching_iou=0.5)
    assert positives(t) == {(0, 0, 1, 3, 3)}  # cell (floor(120/32), floor(100/32))
    assert t[0]["box"][0, 1, 3, 3].tolist() == pytest.approx(box)
    assert int(t[0]["label"][0, 1, 3, 3]) == 2
    assert t[0]["positive"].shape == (1, 3, 8, 8) and t[1]["positive"].shape == (1, 3, 16, 16)
    assert t[0]["box"].shape == (1, 3, 8, 8, 4) and t[1]["label"].dtype == torch.long


def test_small_box_goes_to_level_1_best_anchor_and_cell():
    # 20x25: IoU 0.805 with (23,27), 0.28 with (10,14), 0.233 with (37,58), 0.075 with (81,82)
    box = box_at(200, 120, 20, 25)
    t = build_targets(gt_of([], [(box, 1)]), ANCHORS, STRIDES, GRIDS, box_matching_iou=0.5)
    assert positives(t) == {(1, 1, 1, 7, 12)}  # image 1, cell (floor(120/16), floor(200/16))
    assert t[1]["box"][1, 1, 7, 12].tolist() == pytest.approx(box)
    assert int(t[1]["label"][1, 1, 7, 12]) == 1


def test_box_matching_iou_adds_extra_positives():
    big, small = box_at(100, 120, 140, 170), box_at(200, 120, 20, 25)
    t = build_targets(gt_of([(big, 0), (small, 1)]), ANCHORS, STRIDES, GRIDS, box_matching_iou=0.25)
    # big: also (81,82) at 0.279; small: also (10,14) at 0.28, but not (37,58) at 0.233
    assert positives(t) == {(0, 0, 1, 3, 3), (0, 0, 0, 3, 3), (1, 0, 1, 7, 12), (1, 0, 0, 7, 12)}
    assert int(t[0]["label"][0, 0, 3, 3]) == 0 and int(t[1]["label"][0, 0, 7, 12]) == 1
    t = build_targets(gt_of([(big, 0), (small, 1)]), ANCHORS, STRIDES, GRIDS, box_matching_iou=0.2)
    assert (0, 0, 2, 3, 3) in positives(t) and (1, 0, 2, 7, 12) in positives(t)


def test_cell_is_clamped_to_the_grid():
    # centre (256, 0) is on the far right edge: floor(256/16) = 16 -> 15
    t = build_targets(gt_of([(box_at(256, 0, 40, 20), 0)]), ANCHORS, STRIDES, GRIDS, box_matching_iou=0.5)
    assert positives(t) == {(1, 0, 1, 0, 15)}


def test_collision_keeps_the_better_matching_gt():
    worse, better = (box_at(88, 88, 20, 25), 0), (box_at(90, 92, 23, 27), 1)  # both cell (5, 5), anchor (23,27)
    for order in ([worse, better], [better, worse]):
        t = build_targets(gt_of(order), ANCHORS, STRIDES, GRIDS, box_matching_iou=0.9)
        assert positives(t) == {(1, 0, 1, 5, 5)}
        assert int(t[1]["label"][0, 1, 5, 5]) == 1
        assert t[1]["box"][0, 1, 5, 5].tolist() == pytest.approx(better[0])


def test_collision_tie_goes_to_the_first_listed_gt():
    a, b = (box_at(84, 84, 23, 27), 0), (box_at(92, 92, 23, 27), 1)
    assert int(build_targets(gt_of([a, b]), ANCHORS, STRIDES, GRIDS)[1]["label"][0, 1, 5, 5]) == 0
    assert int(build_targets(gt_of([b, a]), ANCHORS, STRIDES, GRIDS)[1]["label"][0, 1, 5, 5]) == 1


def test_empty_and_degenerate_gts_give_no_positives():
    gt = gt_of([], [([10, 10, 10, 30], 0)])  # zero width
    t = build_targets(gt, ANCHORS, STRIDES, GRIDS)
    assert not positives(t)
    assert not positives(build_targets([], ANCHORS, STRIDES, GRIDS))


def reference_targets(gt, anchors, strides, grids, thr):
    """A slow loop over images, gts and anchors that applies the documented rules."""
    n, na = len(gt), anchors.shape[1]
    pos = [np.zeros((n, na, h, w), bool) for h, w in grids]
    box = [np.zeros((n, na, h, w, 4)) for h, w in grids]
    lab = [np.zeros((n, na, h, w), int) for h, w in grids]
    best_iou = [np.full((n, na, h, w), -1.0) for h, w in grids]
    flat = anchors.reshape(-1, 2).numpy()
    for i, (boxes, labels) in enumerate(gt):
        for b, c in zip(boxes.numpy(), labels.numpy()):
            ious = iou_wh((b[2:] - b[:2])[None], flat)[0]
            for k, iou in enumerate(ious):
                if iou <= thr and k != ious.argmax():
                    continue
                lv, a = divmod(k, na)
                h, w = grids[lv]
                x = min(max(int(np.floor((b[0] + b[2]) / 2 / strides[lv])), 0), w - 1)
                y = min(max(int(np.floor((b[1] + b[3]) / 2 / strides[lv])), 0), h - 1)
                if iou > best_iou[lv][i, a, y, x]:  # strict: an earlier gt keeps a tie
                    best_iou[lv][i, a, y, x] = iou
                    pos[lv][i, a, y, x], box[lv][i, a, y, x], lab[lv][i, a, y, x] = True, b, c
    return pos, box, lab


def random_gt(n_img=16, n_box=20, seed=0):
    gen = torch.Generator().manual_seed(seed)
    gt = []
    for _ in range(n_img):
        # a coarse lattice of centres and sizes makes collisions (and exact ties) common
        centre = torch.randint(0, 17, (n_box, 2), generator=gen).float() * 16
        wh = torch.randint(1, 12, (n_box, 2), generator=gen).float() * 12
        gt.append((torch.cat([centre - wh / 2, centre + wh / 2], 1), torch.randint(0, 5, (n_box,), generator=gen)))
    return gt


def test_matches_a_loop_reference_on_a_crowded_batch():
    gt = random_gt()
    t = build_targets(gt, ANCHORS, STRIDES, GRIDS, box_matching_iou=0.25)
    pos, box, lab = reference_targets(gt, ANCHORS, STRIDES, GRIDS, 0.25)
    for level in range(2):
        np.testing.assert_array_equal(t[level]["positive"].numpy(), pos[level])
        np.testing.assert_allclose(t[level]["box"].numpy(), box[level], atol=1e-5)
        np.testing.assert_array_equal(t[level]["label"].numpy(), lab[level])
    assert pos[0].sum() + pos[1].sum() > 100


def test_fast_for_a_batch_of_16_with_20_boxes_each():
    gt = random_gt(seed=1)
    build_targets(gt, ANCHORS, STRIDES, [(13, 13), (26, 26)])
    start = time.perf_counter()
    for _ in range(5):
        build_targets(gt, ANCHORS, STRIDES, [(13, 13), (26, 26)])
    assert (time.perf_counter() - start) / 5 < 0.2
