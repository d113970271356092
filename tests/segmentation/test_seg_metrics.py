"""Segmentation metrics: one confusion matrix over the whole set, equal to a pixel-by-pixel reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from transferkit.errors import DataError
from transferkit.metrics.segmentation import ConfusionMatrix, save_confusion_png

IGNORE = 255


def _reference(batches, names, ignore):
    """Slow and obvious: count every pixel in Python, then the textbook formulas."""
    n = len(names)
    counts = [[0] * n for _ in range(n)]
    for pred, target in batches:
        for p, t in zip(pred.reshape(-1).tolist(), target.reshape(-1).tolist()):
            if t != ignore:
                counts[t][p] += 1
    iou, f1 = {}, {}
    for c, name in enumerate(names):
        tp = counts[c][c]
        fp = sum(counts[r][c] for r in range(n)) - tp
        fn = sum(counts[c]) - tp
        iou[name] = tp / (tp + fp + fn) if tp + fp + fn else None
        f1[name] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    present = [v for v in iou.values() if v is not None]
    total = sum(map(sum, counts))
    return {"mIoU": sum(present) / len(present), "IoU_per_class": iou, "F1_per_class": f1,
            "pixel_accuracy": sum(counts[c][c] for c in range(n)) / total, "num_pixels": total}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_pixel_by_pixel_reference_exactly_over_many_batches(seed):
    rng = np.random.default_rng(seed)
    names = ["background", "road", "car", "sign", "never"]
    batches = []
    for _ in range(4):
        target = rng.integers(0, 4, size=(2, 17, 23))  # class 4 ("never") appears nowhere
        target[rng.random(target.shape) < 0.1] = IGNORE
        pred = np.where(rng.random(target.shape) < 0.6, np.where(target == IGNORE, 0, target),
                        rng.integers(0, 4, size=target.shape))
        batches.append((pred, target))
    cm = ConfusionMatrix(len(names), IGNORE)
    for i, (pred, target) in enumerate(batches):
        if i % 2:  # torch and numpy batches both accumulate
            cm.update(torch.from_numpy(pred), torch.from_numpy(target))
        else:
            cm.update(pred, target)
    got = cm.result(names)
    assert got == _reference(batches, names, IGNORE)
    assert got["IoU_per_class"]["never"] is None and got["F1_per_class"]["never"] is None


def test_ignored_pixels_are_not_counted_whatever_was_predicted_there():
    target = np.array([[0, 1, IGNORE, IGNORE]])
    cm_a, cm_b = ConfusionMatrix(2, IGNORE), ConfusionMatrix(2, IGNORE)
    cm_a.update(np.array([[0, 1, 0, 0]]), target)
    cm_b.update(np.array([[0, 1, 1, 1]]), target)
    assert np.array_equal(cm_a.matrix, cm_b.matrix) and cm_a.matrix.sum() == 2
    assert cm_a.result(["a", "b"])["mIoU"] == 1.0


def test_a_class_only_predicted_counts_with_iou_zero():
    cm = ConfusionMatrix(3, IGNORE)
    cm.update(np.array([0, 0, 2, 1]), np.array([0, 0, 0, 1]))
    assert cm.matrix.tolist() == [[2, 0, 1], [0, 1, 0], [0, 0, 0]]  # rows true, columns predicted
    result = cm.result(["a", "b", "c"])
    assert result["IoU_per_class"] == {"a": 2 / 3, "b": 1.0, "c": 0.0}
    assert result["mIoU"] == (2 / 3 + 1.0 + 0.0) / 3
    assert result["pixel_accuracy"] == 3 / 4


def test_is_accumulated_not_averaged_per_batch():
    cm = ConfusionMatrix(2, IGNORE)
    cm.update(np.array([1]), np.array([1]))  # batch 1: class 1 perfect (IoU 1)
    cm.update(np.array([0, 0, 0, 1]), np.array([1, 1, 1, 1]))  # batch 2: IoU 1/4
    assert cm.result(["a", "b"])["IoU_per_class"]["b"] == 2 / 5  # not (1 + 1/4) / 2


def test_empty_matrix_and_bad_ids():
    cm = ConfusionMatrix(2, IGNORE)
    cm.update(np.zeros((1, 2), int), np.full((1, 2), IGNORE))
    assert cm.result(["a", "b"]) == {"mIoU": None, "IoU_per_class": {"a": None, "b": None}, "pixel_accuracy": None,
                                     "F1_per_class": {"a": None, "b": None}, "num_pixels": 0}
    with pytest.raises(DataError, match="mask holds id 7"):
        cm.update(np.array([0]), np.array([7]))
    with pytest.raises(DataError, match="prediction holds class id 2"):
        cm.update(torch.tensor([2]), torch.tensor([0]))
    with pytest.raises(DataError, match="shape"):
        cm.update(np.zeros(3, int), np.zeros(2, int))


def test_confusion_png_is_written_atomically(tmp_path):
    path = save_confusion_png(np.array([[90, 10], [0, 5]]), ["background", "car"], tmp_path / "confusion.png")
    assert Image.open(path).size[0] > 100
    assert [p.name for p in tmp_path.iterdir()] == ["confusion.png"]  # no temp file left behind
