"""Semantic segmentation metrics from one confusion matrix accumulated over a whole evaluation set.

    cm = ConfusionMatrix(num_classes=3, ignore_index=255)
    for pred, target in batches:          # [N, H, W] class ids, torch or numpy
        cm.update(pred, target)
    cm.result(["background", "road", "car"])

Pixel counts are summed first and every score is computed once from the totals, so a class's IoU is
intersection / union over all images, not a mean of per-batch or per-image IoUs (which would weigh
a tiny object in one image like a whole scene). For class c, with TP = matrix[c, c],
FP = column sum - TP, FN = row sum - TP:

    IoU_c = TP / (TP + FP + FN)      F1_c = 2 TP / (2 TP + FP + FN)      pixel accuracy = trace / total

A class absent from both the truth and the predictions has no IoU (0 / 0): it is reported as None and
left out of mIoU, the mean of the others. Pixels whose truth is `ignore_index` are not counted at all.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import plots
from ..errors import DataError, ModelError


class ConfusionMatrix:
    """Pixel counts [C, C], rows the true class and columns the predicted one, over every update."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if num_classes < 1:
            raise ModelError(f"a confusion matrix needs at least one class, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def reset(self) -> None:
        self.matrix[:] = 0

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add one batch of predicted and true class ids (same shape, e.g. [N, H, W]).

        Counted on the tensors' device (a GPU batch sends back only C*C counts). Raises DataError for a
        true id that is neither a class nor the ignore id, or a predicted id outside [0, C).
        """
        if tuple(pred.shape) != tuple(target.shape):
            raise DataError(f"prediction shape {tuple(pred.shape)} differs from the mask's {tuple(target.shape)}")
        n = self.num_classes
        if isinstance(pred, torch.Tensor) or isinstance(target, torch.Tensor):
            pred_t, target_t = torch.as_tensor(pred), torch.as_tensor(target)
            target_t = target_t.to(pred_t.device).reshape(-1).long()
            pred_t = pred_t.reshape(-1).long()
            keep = target_t != self.ignore_index
            pred_t, target_t = pred_t[keep], target_t[keep]
            self._check_range(pred_t, target_t)
            counts = torch.bincount(target_t * n + pred_t, minlength=n * n).cpu().numpy()
        else:
            pred_a = np.asarray(pred).reshape(-1).astype(np.int64)
            target_a = np.asarray(target).reshape(-1).astype(np.int64)
            keep = target_a != self.ignore_index
            pred_a, target_a = pred_a[keep], target_a[keep]
            self._check_range(pred_a, target_a)
            counts = np.bincount(target_a * n + pred_a, minlength=n * n)
        self.matrix += counts.reshape(n, n).astype(np.int64)

    def _check_range(self, pred: Any, target: Any) -> None:
        if len(target) == 0:
            return
        n = self.num_classes
        t_lo, t_hi, p_lo, p_hi = (int(v) for v in (target.min(), target.max(), pred.min(), pred.max()))
        if t_lo < 0 or t_hi >= n:
            bad = t_hi if t_hi >= n else t_lo
            raise DataError(f"a mask holds id {bad}, which is neither a class (0..{n - 1}) nor the ignore id "
                            f"{self.ignore_index}; map it through data.classes or set data.ignore_index")
        if p_lo < 0 or p_hi >= n:
            bad = p_hi if p_hi >= n else p_lo
            raise DataError(f"a prediction holds class id {bad}, outside 0..{n - 1}: predictions must use the "
                            "training class ids")

    def result(self, class_names: Sequence[str]) -> dict[str, Any]:
        """{"mIoU", "IoU_per_class", "pixel_accuracy", "F1_per_class", "num_pixels"} (see the module docstring).

        mIoU and pixel_accuracy are None when no pixel was counted.
        """
        names = list(class_names)
        if len(names) != self.num_classes:
            raise ModelError(f"{len(names)} class names for a {self.num_classes}-class confusion matrix")
        m = self.matrix
        total = int(m.sum())
        iou: dict[str, float | None] = {}
        f1: dict[str, float | None] = {}
        for c, name in enumerate(names):
            tp = int(m[c, c])
            fp = int(m[:, c].sum()) - tp
            fn = int(m[c, :].sum()) - tp
            union = tp + fp + fn
            iou[name] = tp / union if union else None
            f1[name] = 2 * tp / (2 * tp + fp + fn) if union else None
        scored = [v for v in iou.values() if v is not None]
        return {
            "mIoU": sum(scored) / len(scored) if scored else None,
            "IoU_per_class": iou,
            "pixel_accuracy": int(np.trace(m)) / total if total else None,
            "F1_per_class": f1,
            "num_pixels": total,
        }


def save_confusion_png(matrix: np.ndarray, class_names: Sequence[str], path: str | Path,
                       title: str = "Pixel confusion matrix") -> Path:
    """The pixel confusion matrix as a heat map; cells show percentages of the row's pixels (raw pixel
    counts run into millions and would not fit)."""
    return plots.save_confusion_png(matrix, class_names, path, title, cells="percent", unit="px")
