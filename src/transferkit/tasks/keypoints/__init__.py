"""Keypoint estimation: top-down heatmap models on COCO keypoints (see task.py and docs/keypoints.md)."""
from .task import TASK, KeypointsTask

__all__ = ["TASK", "KeypointsTask"]
