"""Detection AP agrees with pycocotools (coco mode, AP50:95) and with a plain VOC-devkit computation."""
from __future__ import annotations

import contextlib
import io
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from transferkit.vision.boxes import ImageBoxes
from transferkit.metrics import evaluate_detections, format_ap_table, save_pr_curves

CLASSES = ["car", "person", "cyclist", "truck"]  # "truck" never appears in the ground truth


def random_scene(seed: int, num_images: int = 40) -> tuple[list[ImageBoxes], list[ImageBoxes]]:
    """Jittered GT, duplicates, false positives, missed GT, DontCare regions, scores with ties."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for i in range(num_images):
        path = Path(f"scene{seed}/img{i:03d}.png")
        n = int(rng.integers(0, 7)) if i % 7 else 0  # every 7th image has no ground truth
        xy = rng.uniform(0, 500, (n, 2))
        wh = rng.uniform(4, 150, (n, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1)
        labels = rng.integers(0, 3, n)
        ignore = np.zeros((0, 4))
        if rng.random() < 0.35:
            corner = rng.uniform(0, 500, (2, 2))
            ignore = np.concatenate([corner, corner + rng.uniform(20, 120, (2, 2))], axis=1)
        gts.append(ImageBoxes(path, boxes, labels, ignore=ignore))
        if i % 11 == 5:
            continue  # no prediction entry at all for this image
        p_boxes, p_labels = [], []
        for box, label in zip(boxes, labels):
            for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):  # missed, found, found twice
                w, h = box[2] - box[0], box[3] - box[1]
                p_boxes.append(box + rng.normal(0, 0.12, 4) * [w, h, w, h])
                p_labels.append(label if rng.random() < 0.9 else rng.integers(0, 4))
        for _ in range(int(rng.integers(0, 4))):  # false positives anywhere, truck included
            corner = rng.uniform(0, 500, 2)
            p_boxes.append(np.concatenate([corner, corner + rng.uniform(4, 100, 2)]))
            p_labels.append(rng.integers(0, 4))
        for region in ignore:  # predictions inside DontCare
            if rng.random() < 0.7:
                inner = region + np.array([2, 2, -2, -2]) * rng.uniform(0, 5)
                p_boxes.append(inner)
                p_labels.append(rng.integers(0, 3))
        p_boxes = np.array(p_boxes).reshape(-1, 4)
        p_boxes[:, 2:] = np.maximum(p_boxes[:, 2:], p_boxes[:, :2] + 1)
        scores = np.round(rng.uniform(0.05, 1.0, len(p_boxes)), 1)  # coarse: many equal scores
        preds.append(ImageBoxes(path, p_boxes, np.array(p_labels), scores=scores))
    return gts, preds


def pycocotools_precision(gts, preds, iou_thrs=None, max_dets: int = 100) -> np.ndarray:
    """COCOeval precision [T, R, K] (area 'all', one maxDets) on in-memory COCO dicts."""
    images, anns = [], []
    for image_id, gt in enumerate(gts, start=1):  # ids follow list order, as COCOeval sorts them
        images.append({"id": image_id, "file_name": str(gt.image), "width": 640, "height": 640})
        regions = [(b, int(k), 0) for b, k in zip(gt.boxes, gt.labels)]
        regions += [(b, k, 1) for b in gt.ignore for k in range(len(CLASSES))]  # DontCare = crowd, per class
        for box, label, crowd in regions:
            x1, y1, x2, y2 = (float(v) for v in box)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": label + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": crowd})
    ids = {str(gt.image): i for i, gt in enumerate(gts, start=1)}
    results = [{"image_id": ids[str(p.image)], "category_id": int(k) + 1, "score": float(s),
                "bbox": [float(b[0]), float(b[1]), float(b[2]) - float(b[0]), float(b[3]) - float(b[1])]}
               for p in preds for b, k, s in zip(p.boxes, p.labels, p.scores)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": anns,
                           "categories": [{"id": k + 1, "name": n} for k, n in enumerate(CLASSES)]}
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        if iou_thrs is not None:
            evaluator.params.iouThrs = np.array(iou_thrs, np.float64)
        evaluator.params.maxDets = [max_dets]
        evaluator.params.areaRng = [[0, 1e5 ** 2]]
        evaluator.params.areaRngLbl = ["all"]
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator.eval["precision"][:, :, :, 0, 0]


def coco_ap_per_class(precision_trk: np.ndarray) -> list[float | None]:
    """Mean over thresholds and recall points per class; None where COCOeval wrote -1 (no GT)."""
    return [None if (precision_trk[:, :, k] < 0).any() else float(precision_trk[:, :, k].mean())
            for k in range(precision_trk.shape[2])]


def voc_reference_ap(gts, preds, class_index: int, threshold: float, eleven_point: bool) -> float:
    """VOC-devkit style: global score order, greedy matching, cumsum TP/FP, then interpolation."""
    dets = []  # (score, image index, box), image order then box order
    for p in preds:
        i = next(j for j, g in enumerate(gts) if g.image == p.image)
        dets += [(float(s), i, [float(v) for v in b]) for b, k, s in zip(p.boxes, p.labels, p.scores)
                 if k == class_index]
    dets.sort(key=lambda d: (-d[0], d[1]))  # ties: ground-truth image order, then box order (stable sort)
    gt_boxes = [[[float(v) for v in b] for b, k in zip(g.boxes, g.labels) if k == class_index] for g in gts]
    used = [[False] * len(b) for b in gt_boxes]
    npos = sum(len(b) for b in gt_boxes)

    def overlap(a, b, crowd=False):
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        if w <= 0 or h <= 0:
            return 0.0
        area_a = (a[2] - a[0]) * (a[3] - a[1])
        return w * h / (area_a if crowd else area_a + (b[2] - b[0]) * (b[3] - b[1]) - w * h)

    tp, fp = [], []
    for _, i, box in dets:
        best, best_iou = None, threshold
        for g, gt_box in enumerate(gt_boxes[i]):
            iou = overlap(box, gt_box)
            if not used[i][g] and iou >= best_iou:
                best, best_iou = g, iou
        if best is not None:
            used[i][best] = True
            tp.append(1), fp.append(0)
        elif any(overlap(box, [float(v) for v in r], crowd=True) >= threshold for r in gts[i].ignore):
            continue  # DontCare: neither
        else:
            tp.append(0), fp.append(1)
    tp, fp = np.cumsum(tp, dtype=float), np.cumsum(fp, dtype=float)
    rec = tp / npos
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if eleven_point:
        return sum((prec[rec >= t].max() if (rec >= t).any() else 0.0) for t in np.arange(0.0, 1.1, 0.1)) / 11
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for j in range(len(mpre) - 1, 0, -1):
        mpre[j - 1] = max(mpre[j - 1], mpre[j])
    j = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[j + 1] - mrec[j]) * mpre[j + 1]))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("threshold", [0.5, 0.75])
def test_coco_mode_equals_pycocotools_at_one_threshold(seed, threshold):
    gts, preds = random_scene(seed)
    result = evaluate_detections(gts, preds, CLASSES, iou_thresholds=threshold, mode="coco", max_detections=1000)
    expected = coco_ap_per_class(pycocotools_precision(gts, preds, [threshold], max_dets=1000))
    for name, want in zip(CLASSES, expected):
        got = result["AP_per_class"][name]
        assert (got is None) == (want is None), name
        if want is not None:
            assert got == pytest.approx(want, abs=1e-6), name
    assert result["AP_per_class"]["truck"] is None
    assert result["mAP"] == pytest.approx(np.mean([a for a in expected if a is not None]), abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_ap50_95_equals_pycocotools_default_thresholds(seed):
    gts, preds = random_scene(seed + 10)
    result = evaluate_detections(gts, preds, CLASSES, mode="integrate")
    precision = pycocotools_precision(gts, preds, max_dets=100)  # default iouThrs .50:.05:.95
    assert precision.shape[0] == 10
    assert result["AP50_95"] == pytest.approx(precision[precision > -1].mean(), abs=1e-6)  # COCOeval stats[0]
    for name, want in zip(CLASSES, coco_ap_per_class(precision)):
        assert result["AP50_95_per_class"][name] == (None if want is None else pytest.approx(want, abs=1e-6))


def test_max_detections_keeps_the_top_scores_per_image_and_class_like_pycocotools():
    gts, preds = random_scene(3)
    result = evaluate_detections(gts, preds, CLASSES, mode="coco", max_detections=2)
    expected = coco_ap_per_class(pycocotools_precision(gts, preds, [0.5], max_dets=2))
    for name, want in zip(CLASSES[:3], expected):
        assert result["AP_per_class"][name] == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", ["sample", "integrate"])
def test_voc_modes_equal_a_plain_voc_devkit_computation(seed, mode):
    gts, preds = random_scene(seed + 20)
    random.Random(seed).shuffle(preds)  # keyed by path: the order of predictions does not matter
    for threshold in (0.5, 0.7):
        result = evaluate_detections(gts, preds, CLASSES, iou_thresholds=threshold, mode=mode, max_detections=1000)
        for k, name in enumerate(CLASSES[:3]):
            want = voc_reference_ap(gts, preds, k, threshold, eleven_point=mode == "sample")
            assert result["AP_per_class"][name] == pytest.approx(want, abs=1e-9), (name, threshold)


def test_per_class_iou_threshold_changes_only_that_class():
    gts, preds = random_scene(7)
    base = evaluate_detections(gts, preds, CLASSES, iou_thresholds=0.5)
    strict = evaluate_detections(gts, preds, CLASSES, iou_thresholds=0.7)
    mixed = evaluate_detections(gts, preds, CLASSES, iou_thresholds={"car": 0.7})
    assert mixed["iou_thresholds"] == {"car": 0.7, "person": 0.5, "cyclist": 0.5, "truck": 0.5}
    assert mixed["AP_per_class"]["car"] == strict["AP_per_class"]["car"] < base["AP_per_class"]["car"]
    for name in ("person", "cyclist"):
        assert mixed["AP_per_class"][name] == base["AP_per_class"][name]
    assert mixed["AP50_95"] == base["AP50_95"]  # COCO number ignores the per-class thresholds
    default = evaluate_detections(gts, preds, CLASSES, iou_thresholds={"car": 0.5, "default": 0.7})
    assert default["AP_per_class"]["person"] == strict["AP_per_class"]["person"]
    with pytest.raises(ValueError, match="bus"):
        evaluate_detections(gts, preds, CLASSES, iou_thresholds={"bus": 0.7})


@pytest.mark.parametrize("mode", ["sample", "integrate", "coco"])
def test_perfect_predictions_give_ap_one_and_no_predictions_give_zero(mode):
    gts, _ = random_scene(1)
    perfect = [ImageBoxes(g.image, g.boxes, g.labels, scores=np.linspace(1, 0.5, len(g.boxes))) for g in gts]
    result = evaluate_detections(gts, perfect, CLASSES, mode=mode)
    assert result["mAP"] == pytest.approx(1.0) and result["AP50_95"] == pytest.approx(1.0)
    empty = evaluate_detections(gts, [], CLASSES, mode=mode)
    assert empty["mAP"] == 0.0 and empty["AP50_95"] == 0.0
    assert all(empty["AP_per_class"][n] == 0.0 for n in CLASSES[:3])


def test_class_without_ground_truth_is_none_and_left_out_of_map():
    gt = [ImageBoxes(Path("a.png"), [[0, 0, 10, 10]], [0])]
    pred = [ImageBoxes(Path("a.png"), [[0, 0, 10, 10], [50, 50, 60, 60]], [0, 1], scores=[0.9, 0.8])]
    result = evaluate_detections(gt, pred, ["car", "person"])
    assert result["AP_per_class"] == {"car": 1.0, "person": None}
    assert result["mAP"] == 1.0 and result["num_pred"] == {"car": 1, "person": 1}
    assert evaluate_detections([ImageBoxes(Path("a.png"), [], [])], pred, ["car", "person"])["mAP"] is None


def test_each_ground_truth_box_is_matched_once_greedily_by_score():
    gt = [ImageBoxes(Path("a.png"), [[0, 0, 10, 10]], [0])]
    pred = [ImageBoxes(Path("a.png"), [[0, 0, 10, 9], [0, 0, 10, 10]], [0, 0], scores=[0.6, 0.9])]
    result = evaluate_detections(gt, pred, ["car"], mode="integrate")
    assert result["precision"]["car"].tolist() == [1.0, 0.5]  # the 0.9 box takes the GT, the 0.6 box is a FP
    assert result["recall"]["car"].tolist() == [1.0, 1.0]
    assert result["scores"]["car"].tolist() == pytest.approx([0.9, 0.6])


def test_equal_iou_with_two_ground_truth_boxes_goes_to_the_later_one_like_pycocotools():
    gt = [ImageBoxes(Path("a.png"), [[0, 0, 10, 10], [10, 0, 20, 10]], [0, 0])]
    # The first prediction straddles both boxes (IoU 1/3 each); the second only fits the first box.
    pred = [ImageBoxes(Path("a.png"), [[5, 0, 15, 10], [0, 0, 10, 10]], [0, 0], scores=[0.9, 0.8])]
    result = evaluate_detections(gt, pred, ["car"], iou_thresholds=0.3, mode="coco")
    expected = pycocotools_precision(gt, pred, [0.3])[:, :, 0].mean()
    assert result["AP_per_class"]["car"] == pytest.approx(expected) == pytest.approx(1.0)


def test_prediction_inside_dontcare_is_neither_true_nor_false_positive():
    ignore = [[100, 100, 200, 200]]
    gt = [ImageBoxes(Path("a.png"), [[0, 0, 10, 10]], [0], ignore=ignore)]
    # A small box fully inside the DontCare region: IoU with it is 0.04, but coverage is 1.
    pred = [ImageBoxes(Path("a.png"), [[120, 120, 140, 140], [0, 0, 10, 10]], [0, 0], scores=[0.9, 0.8])]
    with_ignore = evaluate_detections(gt, pred, ["car"])
    assert with_ignore["AP_per_class"]["car"] == 1.0 and len(with_ignore["precision"]["car"]) == 1
    without = evaluate_detections([ImageBoxes(Path("a.png"), [[0, 0, 10, 10]], [0])], pred, ["car"])
    assert without["AP_per_class"]["car"] == pytest.approx(0.5)


def test_predictions_are_paired_by_path_and_unknown_images_are_reported():
    gts, preds = random_scene(2)
    in_order = evaluate_detections(gts, preds, CLASSES)
    shuffled = evaluate_detections(gts, preds[::-1], CLASSES)
    assert in_order["AP_per_class"] == shuffled["AP_per_class"]
    stray = ImageBoxes(Path("elsewhere.png"), [[0, 0, 1, 1]], [0], scores=[0.5])
    with pytest.raises(ValueError, match="elsewhere.png"):
        evaluate_detections(gts, preds + [stray], CLASSES)
    with pytest.raises(ValueError, match="label 7"):
        evaluate_detections(gts, [ImageBoxes(gts[0].image, [[0, 0, 1, 1]], [7], scores=[0.5])], CLASSES)
    with pytest.raises(ValueError, match="mode"):
        evaluate_detections(gts, preds, CLASSES, mode="voc")


def test_pr_curves_and_table_are_written_for_every_class(tmp_path):
    gts, preds = random_scene(4)
    result = evaluate_detections(gts, preds, CLASSES, iou_thresholds={"car": 0.7})
    paths = save_pr_curves(result, tmp_path / "plots")
    assert [p.name for p in paths] == [f"pr_{n}.png" for n in CLASSES]
    for p in paths:
        with Image.open(p) as image:
            assert image.format == "PNG" and image.width > 100
    assert not list((tmp_path / "plots").glob(".*.tmp"))
    table = format_ap_table(result)
    for name in CLASSES:
        assert name in table
    assert "n/a" in table.splitlines()[4]  # truck has no ground truth
    assert f"{result['mAP']:6.4f}" in table and "0.70" in table
