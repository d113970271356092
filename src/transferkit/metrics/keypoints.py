"""Keypoint metrics: OKS average precision / recall equal to pycocotools, PCK, NME and per-keypoint errors.

`oks_evaluate` follows pycocotools' COCOeval(iouType="keypoints") step by step, vectorised with numpy:
  * OKS between a prediction and a ground-truth object: mean over the object's labelled keypoints (v > 0) of
    exp(-d^2 / (2 * area * (2 * sigma)^2)); for an object with no labelled keypoint, d is the distance outside
    its box grown by the box's size on each side, averaged over all keypoints;
  * ground truth is ignored when iscrowd, when num_keypoints == 0, or when its area lies outside the area range
    (all [0, 1e10], medium [32^2, 96^2], large [96^2, 1e10], bounds inclusive); a prediction's area is that of
    its keypoints' extent;
  * per image and category the 20 highest-scoring predictions (stable order) are matched greedily, the same
    rule for each OKS threshold 0.50:0.05:0.95: the unmatched non-ignored object with the highest OKS >= the
    threshold (ties to the later object), else an ignored one (crowd objects may absorb many predictions);
    predictions matched to an ignored object, or unmatched with an area outside the range, count for nothing;
  * precision at 101 recall points, accumulated over images in ascending id order (detection.py's "coco"
    rule), averaged over thresholds and categories that have ground truth.
Quirk kept for equality: pycocotools marks matches by ground-truth id, so an object with annotation id 0
never yields a true positive.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from .detection import COCO_IOU_THRESHOLDS, average_precision

AREA_RANGES = {"all": (0.0, 1e10), "medium": (32.0 ** 2, 96.0 ** 2), "large": (96.0 ** 2, 1e10)}
MAX_DETECTIONS = 20
OKS_KEYS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
_EPS = np.spacing(1)  # pycocotools adds this to the area


def _keypoint_array(values, k: int, what: str) -> np.ndarray:
    arr = np.asarray(values, np.float64).reshape(-1)
    if arr.size != 3 * k:
        raise ValueError(f"{what} has {arr.size} keypoint numbers; the sigmas give {k} keypoints ({3 * k} numbers)")
    return arr.reshape(k, 3)


def object_keypoint_similarity(pred_xy: np.ndarray, gt_kps: np.ndarray, gt_bbox: np.ndarray, gt_area: np.ndarray,
                               sigmas: np.ndarray) -> np.ndarray:
    """(D, G) OKS of predictions (D, K, 2) against ground-truth objects (G, K, 3) with boxes (G, 4) xywh."""
    variances = (2.0 * np.asarray(sigmas, np.float64)) ** 2
    xd, yd = pred_xy[:, None, :, 0], pred_xy[:, None, :, 1]  # (D, 1, K)
    xg, yg, vg = gt_kps[None, :, :, 0], gt_kps[None, :, :, 1], gt_kps[None, :, :, 2]  # (1, G, K)
    labelled = vg > 0
    has_any = labelled.any(axis=2, keepdims=True)  # (1, G, 1)
    x0, y0 = gt_bbox[:, 0] - gt_bbox[:, 2], gt_bbox[:, 1] - gt_bbox[:, 3]
    x1, y1 = gt_bbox[:, 0] + 2 * gt_bbox[:, 2], gt_bbox[:, 1] + 2 * gt_bbox[:, 3]
    outside_x = np.maximum(0, x0[None, :, None] - xd) + np.maximum(0, xd - x1[None, :, None])
    outside_y = np.maximum(0, y0[None, :, None] - yd) + np.maximum(0, yd - y1[None, :, None])
    dx = np.where(has_any, xd - xg, outside_x)
    dy = np.where(has_any, yd - yg, outside_y)
    e = (dx ** 2 + dy ** 2) / variances / (gt_area[None, :, None] + _EPS) / 2
    counted = np.where(has_any, labelled, True)
    return np.sum(np.where(counted, np.exp(-e), 0.0), axis=2) / counted.sum(axis=2)


def _match(oks: np.ndarray, gt_ignore: np.ndarray, crowd: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """[T, D] index of the matched ground-truth object (-1: none), predictions in score order."""
    num_t, (num_d, num_g) = len(thresholds), oks.shape
    matched = np.full((num_t, num_d), -1, np.int64)
    if num_g == 0:
        return matched
    thresholds = np.minimum(thresholds, 1 - 1e-10)
    taken = np.zeros((num_t, num_g), bool)
    rows = np.arange(num_t)
    for d in range(num_d):
        candidates = (~taken | crowd[None, :]) & (oks[d][None, :] >= thresholds[:, None])
        real = candidates & ~gt_ignore[None, :]
        use = np.where(real.any(axis=1, keepdims=True), real, candidates)
        found = use.any(axis=1)
        if not found.any():
            continue
        best = num_g - 1 - np.where(use, oks[d][None, :], -np.inf)[:, ::-1].argmax(axis=1)
        matched[found, d] = best[found]
        taken[rows[found], best[found]] = True
    return matched


def oks_evaluate(gt: dict, results: list[dict], sigmas: np.ndarray) -> dict:
    """COCO keypoint AP/AR (keys OKS_KEYS; None where pycocotools gives -1) of `results` against `gt`."""
    sigmas = np.asarray(sigmas, np.float64).reshape(-1)
    k = len(sigmas)
    image_ids = sorted({img["id"] for img in gt["images"]})
    category_ids = sorted({c["id"] for c in gt["categories"]})
    known_images, known_categories = set(image_ids), set(category_ids)

    gts: dict[tuple, list[dict]] = defaultdict(list)
    seen_ids: set = set()
    for ann in gt["annotations"]:
        if ann["id"] in seen_ids:
            raise ValueError(f"ground truth annotation id {ann['id']} is used twice")
        seen_ids.add(ann["id"])
        if ann["image_id"] in known_images and ann["category_id"] in known_categories:
            gts[ann["image_id"], ann["category_id"]].append(ann)
    dts: dict[tuple, list[tuple[float, np.ndarray]]] = defaultdict(list)
    for i, r in enumerate(results):
        if r["image_id"] not in known_images:
            raise ValueError(f"result {i} is for image_id {r['image_id']}, which the ground truth does not list")
        if r["category_id"] not in known_categories:
            raise ValueError(f"result {i} has category_id {r['category_id']}, which the ground truth does not list")
        dts[r["image_id"], r["category_id"]].append((float(r["score"]), _keypoint_array(r["keypoints"], k, f"result {i}")))

    # Per category and area range: per image (ascending id) scores, TP / FP flags [T, D], non-ignored GT count.
    per: dict[tuple, list] = defaultdict(list)
    for cat in category_ids:
        for image in image_ids:
            g, d = gts.get((image, cat), []), dts.get((image, cat), [])
            if not g and not d:
                continue
            order = np.argsort([-score for score, _ in d], kind="mergesort")[:MAX_DETECTIONS]
            scores = np.array([d[j][0] for j in order], np.float64)
            pred = np.array([d[j][1][:, :2] for j in order], np.float64).reshape(len(order), k, 2)
            pred_area = (np.ptp(pred[..., 0], axis=1) * np.ptp(pred[..., 1], axis=1)) if len(order) else np.zeros(0)
            gt_kps = np.array([_keypoint_array(a.get("keypoints", [0.0] * 3 * k), k, f"annotation {a['id']}")
                               for a in g]).reshape(len(g), k, 3)
            gt_bbox = np.array([a["bbox"] for a in g], np.float64).reshape(len(g), 4)
            gt_area = np.array([a.get("area", a["bbox"][2] * a["bbox"][3]) for a in g], np.float64)
            crowd = np.array([bool(a.get("iscrowd", 0)) for a in g], bool)
            labelled = np.array([a.get("num_keypoints", int(np.count_nonzero(kp[:, 2] > 0)))
                                 for a, kp in zip(g, gt_kps)], np.int64)
            gt_nonzero_id = np.array([a["id"] != 0 for a in g], bool)
            oks = (object_keypoint_similarity(pred, gt_kps, gt_bbox, gt_area, sigmas)
                   if len(g) and len(order) else np.zeros((len(order), len(g))))
            for name, (low, high) in AREA_RANGES.items():
                ignore = crowd | (labelled == 0) | (gt_area < low) | (gt_area > high)
                sort = np.argsort(ignore, kind="mergesort")  # non-ignored objects first, as pycocotools
                matched = _match(oks[:, sort], ignore[sort], crowd[sort], COCO_IOU_THRESHOLDS)
                hit = matched >= 0
                safe = np.where(hit, matched, len(g))  # one past the end: a False entry appended below
                # pycocotools records a match by the object's id, so id 0 reads as "not matched".
                counted_hit = np.append(gt_nonzero_id[sort], False)[safe]
                matched_ignored = np.append(ignore[sort], False)[safe]
                skip = matched_ignored | (~counted_hit & ((pred_area < low) | (pred_area > high))[None, :])
                per[cat, name].append((scores, counted_hit & ~skip, ~counted_hit & ~skip, int(np.sum(~ignore))))

    precision: dict[str, list[np.ndarray]] = defaultdict(list)  # per area: [T] AP per valid category
    recall: dict[str, list[np.ndarray]] = defaultdict(list)
    for (cat, name), entries in per.items():
        num_gt = sum(e[3] for e in entries)
        if num_gt == 0:
            continue
        scores = np.concatenate([e[0] for e in entries])
        order = np.argsort(-scores, kind="mergesort")
        tp = np.concatenate([e[1] for e in entries], axis=1)[:, order]
        fp = np.concatenate([e[2] for e in entries], axis=1)[:, order]
        aps, recalls = [], []
        for t in range(len(COCO_IOU_THRESHOLDS)):
            kept = tp[t] | fp[t]
            tp_sum = np.cumsum(tp[t][kept]).astype(np.float64)
            rc = tp_sum / num_gt
            pr = tp_sum / np.arange(1, len(tp_sum) + 1)
            aps.append(average_precision(rc, pr, "coco"))
            recalls.append(float(tp[t].sum()) / num_gt)
        precision[name].append(np.array(aps))
        recall[name].append(np.array(recalls))

    def summary(values: dict[str, list[np.ndarray]], area: str, t: int | None) -> float | None:
        rows = values.get(area, [])
        if not rows:
            return None
        stacked = np.stack(rows)  # [categories, T]
        return float(stacked.mean() if t is None else stacked[:, t].mean())

    t50, t75 = int(np.argmin(np.abs(COCO_IOU_THRESHOLDS - 0.5))), int(np.argmin(np.abs(COCO_IOU_THRESHOLDS - 0.75)))
    out: dict = {}
    for prefix, values in (("AP", precision), ("AR", recall)):
        out[prefix] = summary(values, "all", None)
        out[prefix + "50"] = summary(values, "all", t50)
        out[prefix + "75"] = summary(values, "all", t75)
        out[prefix + "m"] = summary(values, "medium", None)
        out[prefix + "l"] = summary(values, "large", None)
    out = {key: out[key] for key in OKS_KEYS}
    out["num_gt"] = sum(1 for anns in gts.values() for a in anns)
    out["num_results"] = len(results)
    return out


# ------------------------------------------------------------------------------- PCK, NME, errors

def _distances(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    if pred.shape[:2] != gt.shape[:2] or pred.shape[-1] < 2 or gt.shape[-1] != 3:
        raise ValueError(f"predictions {pred.shape} and ground truth {gt.shape} must be (M, K, 2) and (M, K, 3)")
    return np.linalg.norm(pred[..., :2] - gt[..., :2], axis=-1), gt[..., 2] > 0


def _means(values: np.ndarray, mask: np.ndarray) -> tuple[float, np.ndarray]:
    """Overall mean and per-keypoint means of `values` where `mask` (NaN where nothing counts)."""
    counts = mask.sum(axis=0)
    sums = np.where(mask, values, 0.0).sum(axis=0)
    per_keypoint = np.divide(sums, counts, out=np.full(sums.shape, np.nan), where=counts > 0)
    overall = float(sums.sum() / counts.sum()) if counts.sum() else float("nan")
    return overall, per_keypoint


def pck(pred: np.ndarray, gt: np.ndarray, norm: np.ndarray, alpha: float = 0.05) -> tuple[float, np.ndarray]:
    """Fraction of labelled keypoints within alpha * norm (per object, e.g. its box's longer side) of the truth."""
    dist, labelled = _distances(pred, gt)
    norm = np.asarray(norm, np.float64).reshape(-1, 1)
    mask = labelled & (norm > 0)
    return _means((dist <= alpha * norm).astype(np.float64), mask)


def nme(pred: np.ndarray, gt: np.ndarray, norm: np.ndarray) -> tuple[float, np.ndarray]:
    """Normalised mean error: labelled keypoints' distance / norm (per object, e.g. inter-ocular distance)."""
    dist, labelled = _distances(pred, gt)
    norm = np.asarray(norm, np.float64).reshape(-1, 1)
    mask = labelled & (norm > 0)
    return _means(np.divide(dist, norm, out=np.zeros_like(dist), where=norm > 0), mask)


def keypoint_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(K,) mean pixel distance per keypoint over its labelled instances (NaN for a keypoint never labelled)."""
    dist, labelled = _distances(pred, gt)
    return _means(dist, labelled)[1]
