"""YOLOv4-tiny anchor k-means: IoU of sizes, planted clusters, errors, determinism."""
from __future__ import annotations

import numpy as np
import pytest

from transferkit.errors import DataError, SpecError
from transferkit.tasks.detection.yolo_v4_tiny.anchors import iou_wh, kmeans_anchors

PLANTED = np.array([[12, 16], [30, 22], [40, 80], [90, 60], [120, 200], [300, 250]], dtype=float)


def planted_boxes(seed: int = 1, per_cluster: int = 50) -> np.ndarray:
    rng = np.random.default_rng(seed)
    wh = np.repeat(PLANTED, per_cluster, axis=0)
    wh = wh * rng.uniform(0.95, 1.05, size=wh.shape)
    return wh[rng.permutation(len(wh))]


def test_iou_wh_hand_values():
    wh = np.array([[2.0, 2.0], [4.0, 1.0]])
    anchors = np.array([[2.0, 2.0], [1.0, 4.0], [4.0, 4.0]])
    expected = np.array([
        [1.0, 2 / 6, 4 / 16],  # (2,2)~(1,4): overlap 1x2 over 4+4-2
        [2 / 6, 1 / 7, 4 / 16],  # (4,1)~(1,4): overlap 1x1 over 4+4-1
    ])
    np.testing.assert_allclose(iou_wh(wh, anchors), expected, rtol=1e-12)


def test_kmeans_recovers_planted_clusters():
    wh = planted_boxes()
    anchors, mean_iou = kmeans_anchors(wh, 6, seed=0)
    assert anchors.shape == (6, 2)
    areas = anchors[:, 0] * anchors[:, 1]
    assert np.all(np.diff(areas) > 0), "anchors must be sorted by area ascending"
    rel = np.abs(anchors - PLANTED) / PLANTED  # PLANTED is already in area order
    assert rel.max() < 0.10, f"anchors {anchors.round(1).tolist()} miss the planted sizes"
    assert mean_iou > 0.85
    np.testing.assert_allclose(mean_iou, iou_wh(wh, anchors).max(1).mean(), rtol=1e-9)


def test_kmeans_is_deterministic_for_a_seed():
    wh = planted_boxes(seed=3) * np.random.default_rng(7).uniform(0.7, 1.3, size=(300, 2))
    a1, m1 = kmeans_anchors(wh, 6, seed=5)
    a2, m2 = kmeans_anchors(wh, 6, seed=5)
    np.testing.assert_array_equal(a1, a2)
    assert m1 == m2


def test_kmeans_with_duplicate_sizes_still_returns_k_anchors():
    wh = np.array([[10.0, 10.0]] * 5 + [[50.0, 40.0]] * 5)
    anchors, mean_iou = kmeans_anchors(wh, 3, seed=0)
    assert anchors.shape == (3, 2) and np.isfinite(anchors).all()
    assert mean_iou == pytest.approx(1.0)


def test_kmeans_rejects_too_few_boxes():
    with pytest.raises(DataError, match="at least 6 boxes.*hold 4"):
        kmeans_anchors(PLANTED[:4], 6)


def test_kmeans_rejects_non_positive_sizes_and_counts_them():
    wh = planted_boxes()
    wh[3] = [0.0, 10.0]
    wh[7] = [5.0, -1.0]
    with pytest.raises(DataError, match="2 of 300 boxes"):
        kmeans_anchors(wh, 6)


def test_kmeans_rejects_bad_k():
    with pytest.raises(SpecError):
        kmeans_anchors(planted_boxes(), 0)
