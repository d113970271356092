"""Evaluation metrics. Detection AP (VOC 11-point, VOC area, COCO 101-point) lives in `detection`."""
from .detection import evaluate_detections, format_ap_table, save_pr_curves

__all__ = ["evaluate_detections", "format_ap_table", "save_pr_curves"]
