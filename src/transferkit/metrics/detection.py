"""Detection average precision, shared by every detection task.

One matching rule for all modes, taken from pycocotools' COCOeval (bbox, area "all"):
  * per image and class, predictions are sorted by descending score (stable, so equal scores keep
    their input order) and only the first `max_detections` are kept;
  * each prediction in turn takes the not-yet-matched ground truth box with the highest IoU >= the
    threshold (ties go to the later box, as in pycocotools); each GT box is matched at most once;
  * a prediction that matches no GT box but covers an ignore (DontCare) region, with
    intersection / prediction area >= the same threshold (pycocotools' crowd rule), is neither a
    true nor a false positive; ignore regions apply to every class and may absorb many predictions.
  * IoU has no "+1": boxes are continuous pixel coordinates (see data/boxes.py).
The `mode` only chooses how the precision/recall curve becomes one number:
  "sample"     VOC2007 11-point: mean of the best precision at recall >= 0, 0.1, ..., 1.0
  "integrate"  VOC2010+: area under the monotone (right-to-left max) precision envelope
  "coco"       101 recall points exactly as pycocotools (searchsorted side="left", 0 past the curve)
AP50_95 is always the COCO number: the 101-point rule averaged over IoU 0.50:0.05:0.95.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np

from ..vision.boxes import ImageBoxes
from ..io import atomic_write_bytes
from .fonts import matplotlib_text

AP_MODES = ("sample", "integrate", "coco")
DEFAULT_IOU_THRESHOLD = 0.5
# The very same floats pycocotools uses (np.arange would drift), so threshold comparisons agree.
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
COCO_RECALL_POINTS = np.linspace(0.0, 1.0, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
# As the VOC devkits (py-faster-rcnn, mmdet): 0.1 * 3 = 0.30000000000000004, so a recall of exactly
# 0.3 does not reach the 0.3 point. Kept so that numbers agree with theirs.
VOC07_RECALL_POINTS = np.arange(0.0, 1.1, 0.1)

TP, FP, IGNORED = 1, 0, -1


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N,4] x [M,4] x1y1x2y2 -> [N,M] IoU in float64 (0 where a union is empty)."""
    inter, area_a, area_b = _intersections(a, b)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def box_coverage(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N,M] intersection / area of each `a` box: how much of a prediction lies in an ignore region."""
    inter, area_a, _ = _intersections(a, b)
    return np.divide(inter, area_a[:, None], out=np.zeros_like(inter), where=area_a[:, None] > 0)


def _intersections(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter, area_a, area_b


def match_image(pred_boxes: np.ndarray, gt_boxes: np.ndarray, ignore_boxes: np.ndarray,
                thresholds: np.ndarray) -> np.ndarray:
    """Greedy matching of score-sorted predictions in one image -> [T, D] of TP / FP / IGNORED."""
    thresholds = np.minimum(np.asarray(thresholds, np.float64), 1 - 1e-10)  # as pycocotools
    num_t, num_d, num_g = len(thresholds), len(pred_boxes), len(gt_boxes)
    status = np.full((num_t, num_d), FP, np.int8)
    if num_d == 0:
        return status
    if len(ignore_boxes):
        covered = box_coverage(pred_boxes, ignore_boxes).max(axis=1)
        status[covered[None, :] >= thresholds[:, None]] = IGNORED
    if num_g == 0:
        return status
    ious = box_iou(pred_boxes, gt_boxes)
    taken = np.zeros((num_t, num_g), bool)
    rows = np.arange(num_t)
    for d in np.flatnonzero(ious.max(axis=1) >= thresholds.min()):
        candidates = ~taken & (ious[d][None, :] >= thresholds[:, None])  # [T, G]
        found = candidates.any(axis=1)
        if not found.any():
            continue
        # Highest IoU wins; on a tie the later GT box, because pycocotools replaces on ">=".
        best = num_g - 1 - np.where(candidates, ious[d], -1.0)[:, ::-1].argmax(axis=1)
        taken[rows[found], best[found]] = True
        status[found, d] = TP
    return status


def average_precision(recall: np.ndarray, precision: np.ndarray, mode: str) -> float:
    """One number from a PR curve ordered by descending score (ignored predictions removed)."""
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    if mode == "sample":
        return float(np.mean([precision[recall >= r].max() if (recall >= r).any() else 0.0
                              for r in VOC07_RECALL_POINTS]))
    if mode == "integrate":
        mrec = np.concatenate(([0.0], recall, [1.0]))
        mpre = np.maximum.accumulate(np.concatenate(([0.0], precision, [0.0]))[::-1])[::-1]
        step = np.flatnonzero(mrec[1:] != mrec[:-1])
        return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))
    if mode == "coco":
        if len(recall) == 0:
            return 0.0
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        at = np.searchsorted(recall, COCO_RECALL_POINTS, side="left")
        sampled = np.where(at < len(recall), envelope[np.minimum(at, len(recall) - 1)], 0.0)
        return float(sampled.mean())
    raise ValueError(f"unknown AP mode {mode!r}: use one of {', '.join(AP_MODES)}")


def _class_thresholds(iou_thresholds: float | dict[str, float], classes: list[str]) -> dict[str, float]:
    if not isinstance(iou_thresholds, dict):
        iou_thresholds = {"default": float(iou_thresholds)}
    unknown = sorted(set(iou_thresholds) - set(classes) - {"default"})
    if unknown:
        raise ValueError(f"iou_thresholds names {unknown}, which are not classes ({classes}); "
                         "use class names, plus 'default' for the rest")
    default = iou_thresholds.get("default", DEFAULT_IOU_THRESHOLD)
    per_class = {name: float(iou_thresholds.get(name, default)) for name in classes}
    for name, t in per_class.items():
        if not 0.0 < t <= 1.0:
            raise ValueError(f"IoU threshold for {name!r} is {t}; it must be in (0, 1]")
    return per_class


def _check_labels(item: ImageBoxes, num_classes: int, what: str) -> None:
    bad = (item.labels < 0) | (item.labels >= num_classes)
    if bad.any():
        raise ValueError(f"{what} for {item.image} has label {int(item.labels[bad][0])}, "
                         f"outside 0..{num_classes - 1}")
    if len(item.labels) != len(item.boxes):
        raise ValueError(f"{what} for {item.image} has {len(item.boxes)} boxes but {len(item.labels)} labels")


def _pair_by_image(ground_truth: list[ImageBoxes], predictions: list[ImageBoxes]) -> list[ImageBoxes | None]:
    """Predictions re-ordered to follow `ground_truth`, keyed by image path (None: no predictions)."""
    index: dict[str, int] = {}
    for i, gt in enumerate(ground_truth):
        key = str(Path(gt.image))
        if key in index:
            raise ValueError(f"ground truth lists image {gt.image} twice")
        index[key] = i
    paired: list[ImageBoxes | None] = [None] * len(ground_truth)
    for pred in predictions:
        i = index.get(str(Path(pred.image)))
        if i is None:
            raise ValueError(f"predictions for {pred.image}, which has no ground truth entry "
                             "(list every evaluated image in ground_truth, even with no boxes)")
        if paired[i] is not None:
            raise ValueError(f"predictions list image {pred.image} twice")
        if pred.scores is None:
            raise ValueError(f"predictions for {pred.image} have no scores")
        paired[i] = pred
    return paired


def evaluate_detections(ground_truth: list[ImageBoxes], predictions: list[ImageBoxes], classes: list[str],
                        iou_thresholds: float | dict[str, float] = DEFAULT_IOU_THRESHOLD,
                        mode: Literal["sample", "integrate", "coco"] = "integrate",
                        max_detections: int = 100) -> dict:
    """AP per class, mAP and COCO AP50:95 of `predictions` against `ground_truth`.

    Predictions are paired with ground truth by image path, in any order; an image without a
    prediction entry has no detections, and a prediction for an image absent from `ground_truth` is
    an error. Equal scores are ranked by the order of `ground_truth`, then of boxes within an image.
    `iou_thresholds` is one float or {class name: threshold, "default": threshold}.
    `max_detections` applies per image and class, like pycocotools' maxDets; `num_pred` counts
    the predictions given, before that cut.
    A class without ground truth boxes has AP None and is left out of mAP; mAP is None when no
    class has ground truth. `precision`, `recall` and `scores` hold each class's curve (float64
    arrays in descending score order, ignored predictions removed) at that class's threshold.
    """
    if mode not in AP_MODES:
        raise ValueError(f"unknown AP mode {mode!r}: use one of {', '.join(AP_MODES)}")
    thresholds = _class_thresholds(iou_thresholds, classes)
    paired = _pair_by_image(ground_truth, predictions)
    num_classes = len(classes)

    # Per class: scores and [1 + 10, D] match status, concatenated in ground-truth image order.
    scores: list[list[np.ndarray]] = [[] for _ in classes]
    status: list[list[np.ndarray]] = [[] for _ in classes]
    num_gt = np.zeros(num_classes, np.int64)
    num_pred = np.zeros(num_classes, np.int64)
    for gt, pred in zip(ground_truth, paired):
        _check_labels(gt, num_classes, "ground truth")
        if pred is not None:
            _check_labels(pred, num_classes, "predictions")
        num_gt += np.bincount(gt.labels, minlength=num_classes)
        if pred is None or len(pred.boxes) == 0:
            continue
        num_pred += np.bincount(pred.labels, minlength=num_classes)
        for k in np.unique(pred.labels):
            mine = np.flatnonzero(pred.labels == k)
            mine = mine[np.argsort(-pred.scores[mine], kind="mergesort")][:max_detections]
            image_thresholds = np.concatenate(([thresholds[classes[k]]], COCO_IOU_THRESHOLDS))
            scores[k].append(pred.scores[mine].astype(np.float64))
            status[k].append(match_image(pred.boxes[mine], gt.boxes[gt.labels == k], gt.ignore, image_thresholds))

    ap, ap50_95, curves = {}, {}, {}
    for k, name in enumerate(classes):
        if num_gt[k] == 0:
            ap[name] = ap50_95[name] = None
            curves[name] = (np.zeros(0), np.zeros(0), np.zeros(0))
            continue
        class_scores = np.concatenate(scores[k]) if scores[k] else np.zeros(0)
        class_status = np.concatenate(status[k], axis=1) if status[k] else np.zeros((11, 0), np.int8)
        order = np.argsort(-class_scores, kind="mergesort")  # pycocotools' tie order
        per_threshold = []
        for t, row in enumerate(class_status[:, order]):
            kept = row != IGNORED
            tp = np.cumsum(row[kept] == TP).astype(np.float64)
            recall = tp / num_gt[k]
            precision = tp / np.arange(1, len(tp) + 1)  # every kept prediction is a TP or an FP
            if t == 0:
                curves[name] = (precision, recall, class_scores[order][kept])
                ap[name] = average_precision(recall, precision, mode)
            else:
                per_threshold.append(average_precision(recall, precision, "coco"))
        ap50_95[name] = float(np.mean(per_threshold))

    def mean(values: dict) -> float | None:
        present = [v for v in values.values() if v is not None]
        return float(np.mean(present)) if present else None

    return {
        "mAP": mean(ap),
        "AP_per_class": ap,
        "AP50_95": mean(ap50_95),
        "AP50_95_per_class": ap50_95,
        "mode": mode,
        "iou_thresholds": thresholds,
        "max_detections": max_detections,
        "classes": list(classes),
        "num_gt": {name: int(n) for name, n in zip(classes, num_gt)},
        "num_pred": {name: int(n) for name, n in zip(classes, num_pred)},
        "precision": {name: c[0] for name, c in curves.items()},
        "recall": {name: c[1] for name, c in curves.items()},
        "scores": {name: c[2] for name, c in curves.items()},
    }


def format_ap_table(result: dict) -> str:
    """A plain-text table: one row per class, then mAP and AP50:95."""
    def show(value: float | None) -> str:
        return "   n/a" if value is None else f"{value:6.4f}"

    classes = result["classes"]
    width = max([len("class"), len("mAP"), *(len(c) for c in classes)])
    lines = [f"{'class':<{width}}  {'GT':>6}  {'pred':>6}  {'IoU':>4}  {'AP':>6}  {'AP50:95':>7}"]
    for name in classes:
        lines.append(f"{name:<{width}}  {result['num_gt'][name]:>6}  {result['num_pred'][name]:>6}  "
                     f"{result['iou_thresholds'][name]:4.2f}  {show(result['AP_per_class'][name])}  "
                     f"{show(result['AP50_95_per_class'][name]):>7}")
    lines.append(f"{'mAP':<{width}}  {'':>6}  {'':>6}  {'':>4}  {show(result['mAP'])}  {show(result['AP50_95']):>7}")
    lines.append(f"AP mode: {result['mode']}; classes without ground truth show n/a and are left out of mAP")
    return "\n".join(lines)


def save_pr_curves(result: dict, out_dir: str | Path) -> list[Path]:
    """One PNG per class, `pr_<class>.png`: the raw PR curve and its monotone envelope."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    written: list[Path] = []
    for name in result["classes"]:
        recall, precision = result["recall"][name], result["precision"][name]
        ap = result["AP_per_class"][name]
        with matplotlib_text([name]):  # a class name in any script (CJK ...), not empty boxes
            fig, ax = plt.subplots(figsize=(5, 5))
            if ap is None:
                ax.text(0.5, 0.5, "no ground truth", ha="center", va="center")
                ax.set_title(f"{name}: no ground truth")
            else:
                envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
                ax.plot(recall, precision, color="tab:blue", linewidth=1, alpha=0.6, label="precision")
                ax.plot(recall, envelope, color="tab:orange", linewidth=1.5, label="envelope")
                ax.legend(loc="lower left")
                ax.set_title(f"{name}: AP {ap:.3f} ({result['mode']}, IoU {result['iou_thresholds'][name]:.2f})")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("recall")
            ax.set_ylabel("precision")
            ax.grid(alpha=0.3)
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100)
            plt.close(fig)
        path = out_dir / f"pr_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name).strip('._') or 'class'}.png"
        if path in written:  # two names that differ only in punctuation
            path = path.with_name(f"{path.stem}_{len(written)}.png")
        written.append(atomic_write_bytes(path, buf.getvalue()))
    return written
