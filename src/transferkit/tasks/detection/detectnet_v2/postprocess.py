"""DetectNet_v2 outputs -> boxes: every confident cell proposes a box, clustering merges them.

decode() turns the coverage and bbox maps into candidate boxes (one per cell above
coverage_threshold, scored by its coverage); cluster_boxes() merges them per class with
- dbscan (TAO's default): DBSCAN on the distance 1 - IoU, each candidate weighted by its coverage,
  so dbscan_min_samples is the summed coverage a neighbourhood needs (TAO: 0.05), not a count.
  A cluster's box is the coverage-weighted mean of its members, its confidence the summed
  coverage (TAO's aggregate_cov), filtered by dbscan_confidence_threshold;
- nms: torchvision NMS over the candidates; confidence = the kept cell's coverage;
- hybrid: DBSCAN clusters, then NMS across the clusters (by confidence).

Reported score: nms keeps the coverage (0..1). dbscan and hybrid report 1 - exp(-confidence), which
is monotone in the summed coverage and lies in 0..1 (one fully covered cell: 0.63, three: 0.95),
so AP ranking equals ranking by TAO's confidence while thresholds stay in a probability-like range.

The settings are the spec's `postprocess` section (`ClusterSettings`), one per class once
module.configs applies its `per_class` overrides.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from torchvision.ops import nms

from ....vision.boxes import ImageBoxes
from .spec import ClusterSettings
from .targets import cell_anchors, per_class

@dataclass
class Candidates:
    """One box per confident cell: boxes [K, 4] input pixels, scores [K] coverage, labels [K]."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


@dataclass
class Detections:
    """Final boxes of one image, best first. `confidence` is what the thresholds were applied to."""

    boxes: np.ndarray  # float32 [N, 4] x1, y1, x2, y2 input pixels
    labels: np.ndarray  # int64 [N]
    scores: np.ndarray  # float32 [N] in 0..1, see the module docstring
    confidence: np.ndarray  # float32 [N] summed coverage (dbscan, hybrid) or coverage (nms)

    def as_image_boxes(self, image: Path, width: int | None = None, height: int | None = None,
                       scale_x: float = 1.0, scale_y: float = 1.0) -> ImageBoxes:
        """As predictions for `image`; scale_x/y map network input pixels to the image's pixels."""
        boxes = self.boxes * np.array([scale_x, scale_y, scale_x, scale_y], dtype=np.float32)
        return ImageBoxes(image=image, boxes=boxes, labels=self.labels, scores=self.scores,
                          width=width, height=height)


def decode(
    cov_prob: torch.Tensor | np.ndarray,
    bbox: torch.Tensor | np.ndarray,
    stride: int,
    cfg: ClusterSettings | Sequence[ClusterSettings] = ClusterSettings(),
    bbox_scale: float = 35.0,
    bbox_offset: float = 0.5,
) -> Candidates:
    """Candidate boxes from one image's coverage probabilities [C, H, W] and bbox map [4C, H, W].

    Boxes are clipped to the network input (W*stride x H*stride); empty ones are dropped.
    """
    cov = torch.as_tensor(cov_prob, dtype=torch.float32).detach().cpu()
    num_classes, out_h, out_w = cov.shape
    coords = torch.as_tensor(bbox, dtype=torch.float32).detach().cpu().reshape(num_classes, 4, out_h, out_w)
    thresholds = torch.tensor([c.coverage_threshold for c in per_class(cfg, num_classes, "cluster config")])
    ax, ay = cell_anchors(out_h, out_w, stride, bbox_offset)
    b0, b1, b2, b3 = (coords * bbox_scale).unbind(1)
    boxes = torch.stack([ax - b0, ay[:, None] - b1, ax + b2, ay[:, None] + b3], dim=-1)  # [C, H, W, 4]
    boxes[..., 0::2] = boxes[..., 0::2].clamp(0, out_w * stride)
    boxes[..., 1::2] = boxes[..., 1::2].clamp(0, out_h * stride)
    valid = (cov > thresholds[:, None, None]) & (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
    labels = torch.arange(num_classes)[:, None, None].expand_as(cov)
    return Candidates(boxes=boxes[valid].numpy(), scores=cov[valid].numpy(), labels=labels[valid].numpy())


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes a [N, 4] and b [M, 4] (x1, y1, x2, y2)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_dbscan(distance: np.ndarray, weights: np.ndarray, eps: float, min_samples: float) -> np.ndarray:
    """DBSCAN on a precomputed distance matrix with sample weights; cluster id per point, -1 = noise.

    A point is a core point when the weights within `eps` of it (itself included) sum to at least
    `min_samples`; core points within eps of each other share a cluster; a non-core point joins the
    cluster of its nearest core neighbour, or is noise.
    """
    n = len(weights)
    labels = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return labels
    near = distance <= eps
    core = near.astype(np.float64) @ weights >= min_samples
    core_ids = np.flatnonzero(core)
    if len(core_ids) == 0:
        return labels
    _, components = connected_components(csr_matrix(near[np.ix_(core_ids, core_ids)]), directed=False)
    labels[core_ids] = components
    border = np.flatnonzero(~core & near[:, core].any(1))
    if len(border):
        nearest_core = core_ids[np.argmin(np.where(near[np.ix_(border, core_ids)],
                                                   distance[np.ix_(border, core_ids)], np.inf), axis=1)]
        labels[border] = labels[nearest_core]
    return labels


def _dbscan_clusters(boxes: np.ndarray, coverage: np.ndarray, cfg: ClusterSettings) -> tuple[np.ndarray, np.ndarray]:
    """(cluster boxes [K, 4], summed coverage [K]) of one class's candidates."""
    ids = weighted_dbscan(1.0 - iou_matrix(boxes, boxes), coverage, cfg.dbscan_eps, cfg.dbscan_min_samples)
    clusters = [ids == k for k in np.unique(ids[ids >= 0])]
    if not clusters:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    members = np.stack(clusters).astype(np.float64) * coverage[None, :]  # [K, N] coverage of each member
    confidence = members.sum(1)
    merged = members @ boxes / confidence[:, None]
    keep = confidence >= cfg.dbscan_confidence_threshold
    return merged[keep].astype(np.float32), confidence[keep].astype(np.float32)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    return nms(torch.from_numpy(boxes).float(), torch.from_numpy(scores).float(), iou_threshold).numpy()


def cluster_boxes(candidates: Candidates, cfg: ClusterSettings | Sequence[ClusterSettings] = ClusterSettings(),
                  num_classes: int | None = None) -> Detections:
    """Merge one image's candidates into final detections, per class, best first.

    With per-class configs pass a list (its length is the class count); with one config
    `num_classes` defaults to the largest candidate label + 1.
    """
    if num_classes is None:
        num_classes = len(cfg) if isinstance(cfg, (list, tuple)) else int(candidates.labels.max(initial=-1)) + 1
    cfgs = per_class(cfg, num_classes, "cluster config")
    out_boxes, out_labels, out_conf, out_scores = [], [], [], []
    for c, class_cfg in enumerate(cfgs):
        mine = candidates.labels == c
        boxes = candidates.boxes[mine].astype(np.float64)
        coverage = candidates.scores[mine].astype(np.float64)
        if len(boxes) == 0:
            continue
        if class_cfg.clustering_algorithm == "nms":
            keep = _nms(boxes, coverage, class_cfg.nms_iou_threshold)
            boxes, confidence, scores = boxes[keep], coverage[keep], coverage[keep]
        else:
            boxes, confidence = _dbscan_clusters(boxes, coverage, class_cfg)
            if class_cfg.clustering_algorithm == "hybrid":
                keep = _nms(boxes, confidence, class_cfg.nms_iou_threshold)
                boxes, confidence = boxes[keep], confidence[keep]
            scores = 1.0 - np.exp(-confidence.astype(np.float64))
        tall = (boxes[:, 3] - boxes[:, 1]) >= class_cfg.minimum_bounding_box_height
        out_boxes.append(boxes[tall])
        out_labels.append(np.full(int(tall.sum()), c, dtype=np.int64))
        out_conf.append(confidence[tall])
        out_scores.append(scores[tall])
    if not out_boxes:
        empty = np.zeros(0, np.float32)
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), empty, empty.copy())
    boxes, labels = np.concatenate(out_boxes), np.concatenate(out_labels)
    confidence, scores = np.concatenate(out_conf), np.concatenate(out_scores)
    order = np.argsort(-scores, kind="stable")[: max(c.max_detections for c in cfgs)]
    return Detections(boxes[order].astype(np.float32), labels[order], scores[order].astype(np.float32),
                      confidence[order].astype(np.float32))


def detections_from_outputs(
    cov_logits: torch.Tensor,
    bbox: torch.Tensor,
    stride: int,
    cfg: ClusterSettings | Sequence[ClusterSettings] = ClusterSettings(),
    bbox_scale: float = 35.0,
    bbox_offset: float = 0.5,
) -> list[Detections]:
    """A batch of raw network outputs (coverage logits [N, C, H, W], bbox [N, 4C, H, W]) -> detections per image."""
    probs = torch.sigmoid(torch.as_tensor(cov_logits).detach().float().cpu())
    bbox = torch.as_tensor(bbox).detach().float().cpu()
    num_classes = probs.shape[1]
    return [cluster_boxes(decode(p, b, stride, cfg, bbox_scale, bbox_offset), cfg, num_classes)
            for p, b in zip(probs, bbox)]
