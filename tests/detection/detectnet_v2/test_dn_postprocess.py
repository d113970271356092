"""DetectNet_v2 post-processing: perfect targets decode back to the ground truth; clustering rules."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.tasks.detection.detectnet_v2.postprocess import (
    Candidates, cluster_boxes, decode, detections_from_outputs, iou_matrix, weighted_dbscan)
from transferkit.errors import SpecError
from transferkit.spec import load_spec
from transferkit.tasks.detection.detectnet_v2.spec import ClusterSettings, DetectNetSpec, TargetSettings
from transferkit.tasks.detection.detectnet_v2.targets import rasterise

STRIDE = 16
# three classes, boxes 20..60 px on a 96x96 input (6x6 grid); boxes of one class do not overlap
GT_BOXES = np.array([[4, 6, 34, 40], [60, 60, 82, 82], [50, 8, 90, 48], [8, 60, 30, 84],
                     [20, 50, 80, 92], [40, 4, 62, 26]], np.float32)
GT_LABELS = np.array([0, 0, 1, 1, 2, 2])


def candidates(boxes, scores, labels=None) -> Candidates:
    boxes = np.asarray(boxes, np.float32)
    labels = np.zeros(len(boxes), np.int64) if labels is None else np.asarray(labels)
    return Candidates(boxes, np.asarray(scores, np.float32), labels)


@pytest.mark.parametrize("algorithm", ["dbscan", "nms", "hybrid"])
@pytest.mark.parametrize("target_cfg", [TargetSettings(), TargetSettings(cov_radius_x=0.4, cov_radius_y=0.4)])
def test_perfect_outputs_decode_to_every_ground_truth_box_and_nothing_else(algorithm, target_cfg):
    t = rasterise(GT_BOXES, GT_LABELS, 3, 6, 6, STRIDE, target_cfg)
    det = cluster_boxes(decode(t["cov"], t["bbox"], STRIDE), ClusterSettings(clustering_algorithm=algorithm), 3)
    assert len(det.boxes) == len(GT_BOXES)
    iou = iou_matrix(GT_BOXES, det.boxes)
    best = iou.argmax(1)
    assert (iou.max(1) > 0.9).all()
    assert sorted(best.tolist()) == list(range(len(GT_BOXES)))  # one detection per box
    assert (det.labels[best] == GT_LABELS).all()
    assert ((det.scores > 0) & (det.scores <= 1)).all()
    assert (np.diff(det.scores) <= 0).all()  # best first


def test_dbscan_box_is_the_coverage_weighted_mean_and_confidence_the_summed_coverage():
    cand = candidates([[10, 10, 50, 50], [12, 12, 52, 52]], [0.75, 0.25])
    det = cluster_boxes(cand, ClusterSettings())
    assert det.boxes[0].tolist() == pytest.approx([10.5, 10.5, 50.5, 50.5]) and len(det.boxes) == 1
    assert det.confidence.tolist() == pytest.approx([1.0])
    assert det.scores.tolist() == pytest.approx([1 - np.exp(-1.0)])


def test_dbscan_confidence_threshold_and_min_samples_drop_weak_clusters():
    cand = candidates([[10, 10, 50, 50], [60, 60, 90, 90]], [0.5, 0.08])
    assert len(cluster_boxes(cand, ClusterSettings(dbscan_confidence_threshold=0.1)).boxes) == 1
    assert len(cluster_boxes(cand, ClusterSettings(dbscan_confidence_threshold=0.0)).boxes) == 2
    # min_samples is summed coverage (TAO): a lone 0.08 cell is noise when 0.1 is needed
    assert len(cluster_boxes(cand, ClusterSettings(dbscan_confidence_threshold=0.0, dbscan_min_samples=0.1)).boxes) == 1


def test_weighted_dbscan_links_core_points_and_attaches_border_points():
    d = np.array([[0, .1, .9, .9], [.1, 0, .2, .9], [.9, .2, 0, .9], [.9, .9, .9, 0]])
    labels = weighted_dbscan(d, np.array([1.0, 1.0, 0.1, 1.0]), eps=0.25, min_samples=1.5)
    # 0 and 1 are core (2.0 and 2.1 within eps), 2 is a border of 1, 3 alone is noise
    assert labels[0] == labels[1] == labels[2] >= 0 and labels[3] == -1


def test_hybrid_suppresses_overlapping_clusters_that_dbscan_keeps_apart():
    cand = candidates([[0, 0, 40, 40], [0, 0, 40, 52]], [0.9, 0.6])  # IoU 0.77
    assert len(cluster_boxes(cand, ClusterSettings(dbscan_eps=0.2)).boxes) == 2
    det = cluster_boxes(cand, ClusterSettings(clustering_algorithm="hybrid", dbscan_eps=0.2, nms_iou_threshold=0.5))
    assert det.boxes.tolist() == [[0, 0, 40, 40]]


def test_nms_keeps_the_most_covered_cell_and_scores_by_coverage():
    cand = candidates([[0, 0, 40, 40], [1, 1, 41, 41], [60, 60, 90, 90]], [0.6, 0.9, 0.3])
    det = cluster_boxes(cand, ClusterSettings(clustering_algorithm="nms", nms_iou_threshold=0.5))
    assert det.boxes.tolist() == [[1, 1, 41, 41], [60, 60, 90, 90]]
    assert det.scores.tolist() == pytest.approx([0.9, 0.3])


def test_boxes_lower_than_minimum_height_are_dropped_and_max_detections_caps_the_count():
    cand = candidates([[0, 0, 40, 3], [50, 50, 60, 90]], [1.0, 1.0])
    assert cluster_boxes(cand, ClusterSettings(minimum_bounding_box_height=4)).boxes.tolist() == [[50, 50, 60, 90]]
    many = candidates([[i * 10, 0, i * 10 + 8, 20] for i in range(9)], np.linspace(0.2, 1, 9))
    assert len(cluster_boxes(many, ClusterSettings(max_detections=5)).boxes) == 5


def test_per_class_configs_and_coverage_threshold():
    cov = torch.zeros(2, 6, 6)
    cov[0, 2, 2] = 0.3
    cov[1, 2, 2] = 0.3
    bbox = torch.full((8, 6, 6), 0.5)
    cfgs = [ClusterSettings(coverage_threshold=0.5), ClusterSettings(coverage_threshold=0.1)]
    cand = decode(cov, bbox, STRIDE, cfgs)
    assert cand.labels.tolist() == [1]
    assert cand.boxes[0].tolist() == pytest.approx([40 - 17.5, 40 - 17.5, 40 + 17.5, 40 + 17.5])


def test_batch_of_logits_gives_detections_per_image_in_image_pixels():
    t = rasterise(GT_BOXES, GT_LABELS, 3, 6, 6, STRIDE)
    logits = (t["cov"] * 2 - 1) * 12
    dets = detections_from_outputs(torch.stack([logits, torch.full_like(logits, -12)]),
                                   torch.stack([t["bbox"], t["bbox"]]), STRIDE, ClusterSettings())
    assert len(dets[0].boxes) == len(GT_BOXES) and len(dets[1].boxes) == 0
    boxes = dets[0].as_image_boxes(Path("a.jpg"), 192, 96, scale_x=2.0, scale_y=1.0)
    assert boxes.scores is not None and len(boxes.boxes) == len(GT_BOXES)
    assert boxes.boxes[:, 2].max() > 96  # x scaled to the 192-wide image


def test_unknown_clustering_algorithm_is_refused_with_its_key():
    with pytest.raises(SpecError, match="postprocess.clustering_algorithm: .*'dbscan', 'nms' or 'hybrid'"):
        load_spec(DetectNetSpec, None, ["postprocess.clustering_algorithm=meanshift"])
