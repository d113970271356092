"""Classification metrics from logits: top-1/top-k, per-class precision/recall/F1, confusion matrix."""
from __future__ import annotations

import numpy as np


def classification_metrics(logits: np.ndarray, labels: np.ndarray, classes: list[str], top_k: int = 5) -> dict:
    n = len(classes)
    pred = logits.argmax(1)
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (labels, pred), 1)
    total = max(1, len(labels))
    result: dict = {"num_images": int(len(labels)), "top1": float((pred == labels).sum() / total)}
    if n >= top_k:
        topk = np.argsort(-logits, axis=1)[:, :top_k]
        result[f"top{top_k}"] = float((topk == labels[:, None]).any(1).sum() / total)
    per_class = {}
    for i, name in enumerate(classes):
        tp = matrix[i, i]
        support = matrix[i].sum()
        predicted = matrix[:, i].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(support)}
    present = [v for v in per_class.values() if v["support"]]
    result["macro_f1"] = float(np.mean([v["f1"] for v in present])) if present else 0.0
    result["per_class"] = per_class
    result["confusion_matrix"] = {"classes": classes, "rows_true_cols_predicted": matrix.tolist()}
    return result
