"""Anchor sizes for YOLOv4-tiny from a dataset's box sizes: k-means with the distance 1 - IoU.

Only box sizes (w, h) matter: two boxes are compared as if they shared their top-left corner, so
the IoU of sizes (w1, h1) and (w2, h2) is min(w1, w2) * min(h1, h2) / (w1*h1 + w2*h2 - that).
"""
from __future__ import annotations

import numpy as np

from ....errors import DataError, SpecError


def iou_wh(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU [N, K] of N box sizes [N, 2] with K anchor sizes [K, 2], boxes aligned at a corner."""
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(wh[:, None, 1], anchors[None, :, 1])
    union = (wh[:, 0] * wh[:, 1])[:, None] + (anchors[:, 0] * anchors[:, 1])[None, :] - inter
    return inter / np.maximum(union, 1e-12)


def _init_plus_plus(wh: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding on d = 1 - IoU: each next centre drawn with probability proportional to d^2."""
    n = len(wh)
    centres = [wh[rng.integers(n)]]
    dist = 1.0 - iou_wh(wh, centres[0][None])[:, 0]
    for _ in range(1, k):
        weights = np.square(np.clip(dist, 0.0, None))
        total = weights.sum()
        idx = rng.choice(n, p=weights / total) if total > 0 else rng.integers(n)
        centres.append(wh[idx])
        dist = np.minimum(dist, 1.0 - iou_wh(wh, wh[idx][None])[:, 0])
    return np.array(centres, dtype=np.float64)


def _lloyd(wh: np.ndarray, centres: np.ndarray, max_iter: int) -> tuple[np.ndarray, float]:
    """Assign each box to its highest-IoU centre, move centres to their members' median; repeat."""
    assign = None
    for _ in range(max_iter):
        iou = iou_wh(wh, centres)
        new_assign = iou.argmax(1)
        if assign is not None and np.array_equal(new_assign, assign):
            break
        assign = new_assign
        best = iou.max(1)
        for j in range(len(centres)):
            members = wh[assign == j]
            if len(members):
                centres[j] = np.median(members, axis=0)
            else:  # an empty cluster restarts at the box the current centres fit worst
                worst = int(best.argmin())
                centres[j] = wh[worst]
                best[worst] = 1.0
    mean_iou = float(iou_wh(wh, centres).max(1).mean())
    return centres, mean_iou


def kmeans_anchors(wh: np.ndarray, k: int, seed: int = 0, n_init: int = 5,
                   max_iter: int = 300) -> tuple[np.ndarray, float]:
    """k anchor sizes [k, 2] (w, h) sorted by area ascending, and the mean best IoU of the boxes.

    k-means on the distance 1 - IoU(wh): k-means++ seeding on that distance, Lloyd iterations with
    median centres, `n_init` restarts from one seeded generator; the run with the highest mean IoU
    (mean over boxes of the IoU with their best anchor) wins. Deterministic for a given seed.
    """
    if int(k) < 1:
        raise SpecError(f"the number of anchors must be at least 1, got {k}; set a positive anchor count")
    k = int(k)
    wh = np.asarray(wh, dtype=np.float64)
    if wh.ndim != 2 or wh.shape[1] != 2:
        raise DataError(f"box sizes must be an [N, 2] array of (width, height), got shape {wh.shape}")
    bad = ~np.isfinite(wh).all(1) | (wh <= 0).any(1)
    if bad.any():
        raise DataError(f"{int(bad.sum())} of {len(wh)} boxes have a non-positive or non-finite width or "
                        f"height; fix or remove them in the labels before computing anchors")
    if len(wh) < k:
        raise DataError(f"k-means needs at least {k} boxes for {k} anchors, the labels hold {len(wh)}; "
                        f"add labelled images or ask for fewer anchors")
    rng = np.random.default_rng(seed)
    best_centres, best_iou = None, -1.0
    for _ in range(max(1, int(n_init))):
        centres, mean_iou = _lloyd(wh, _init_plus_plus(wh, k, rng), max(1, int(max_iter)))
        if mean_iou > best_iou:
            best_centres, best_iou = centres, mean_iou
    order = np.argsort(best_centres[:, 0] * best_centres[:, 1], kind="stable")
    return best_centres[order], best_iou
