"""Text metrics: classification reports (single- and multi-label) and, for token classification, entity reports.

Macro averages are taken over the labels that occur in the true or the predicted labels (what scikit-learn
does when it is not given a label list): a label absent from both has no F1 to average.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _prf(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return float(precision), float(recall), float(f1)


def label_scores(tp: Sequence[float], fp: Sequence[float], fn: Sequence[float], classes: Sequence[str]) -> dict:
    """From per-label true positive, false positive and false negative counts: per_class {name: precision, recall,
    f1, support}, f1_macro (over labels seen in truth or predictions) and f1_micro."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    per_class, seen = {}, []
    for i, name in enumerate(classes):
        precision, recall, f1 = _prf(tp[i], fp[i], fn[i])
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": int(tp[i] + fn[i])}
        if tp[i] + fp[i] + fn[i]:
            seen.append(f1)
    return {"f1_macro": float(np.mean(seen)) if seen else 0.0, "f1_micro": _prf(tp.sum(), fp.sum(), fn.sum())[2],
            "per_class": per_class}


def confusion_report(matrix: np.ndarray, classes: Sequence[str]) -> dict:
    """Single-label scores from a confusion matrix (rows true, columns predicted): accuracy, f1_macro, f1_micro
    (= accuracy for single-label), per_class, confusion (the matrix as a list of lists)."""
    matrix = np.asarray(matrix, dtype=np.int64)
    tp = np.diag(matrix).astype(np.float64)
    scores = label_scores(tp, matrix.sum(0) - tp, matrix.sum(1) - tp, classes)
    return {"accuracy": float(tp.sum() / max(1, matrix.sum())), "f1_macro": scores["f1_macro"],
            "f1_micro": scores["f1_micro"], "per_class": scores["per_class"], "confusion": matrix.tolist()}


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]) -> dict:
    """Single-label scores of predicted against true label indices (see confusion_report)."""
    n = len(classes)
    true, pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if true.shape != pred.shape:
        raise ValueError(f"{len(true)} true labels but {len(pred)} predictions")
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (true, pred), 1)
    return confusion_report(matrix, classes)


def multilabel_report(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict:
    """Multi-label scores from [N, C] 0/1 arrays: accuracy (every label of a sentence right), hamming_accuracy
    (label decisions right), f1_macro, f1_micro, per_class, and per label its 2x2 confusion [[tn, fp], [fn, tp]]."""
    true, pred = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    if true.shape != pred.shape or true.ndim != 2 or true.shape[1] != len(classes):
        raise ValueError(f"true {true.shape} and predicted {pred.shape} must both be [sentences, {len(classes)}]")
    tp = (true & pred).sum(0).astype(np.float64)
    fp = (~true & pred).sum(0).astype(np.float64)
    fn = (true & ~pred).sum(0).astype(np.float64)
    tn = (~true & ~pred).sum(0)
    scores = label_scores(tp, fp, fn, classes)
    rows = max(1, len(true))
    return {"accuracy": float((true == pred).all(1).sum() / rows),
            "hamming_accuracy": float((true == pred).mean()) if true.size else 0.0,
            "f1_macro": scores["f1_macro"], "f1_micro": scores["f1_micro"], "per_class": scores["per_class"],
            "confusion": {name: [[int(tn[i]), int(fp[i])], [int(fn[i]), int(tp[i])]] for i, name in enumerate(classes)}}


# ------------------------------------------------------------------- entity_report (token classification)

def entity_report(true_tags: list[list[str]], pred_tags: list[list[str]]) -> dict:
    """Entity-level scores of IOB2 tag sequences with seqeval in strict IOB2 mode.

    An entity counts as found only when type, first and last word all match. Strict mode reads an I-X
    that continues nothing (after O, or after another type) as no entity, where seqeval's default mode
    would start one. Returns f1, precision, recall (micro over all entities) and per_type {TYPE:
    precision, recall, f1, support}; a score whose denominator is zero (no entity in the truth or in the
    predictions) is 0.0."""
    from seqeval.metrics.v1 import precision_recall_fscore_support, unique_labels  # strict-mode implementation
    from seqeval.scheme import IOB2

    if len(true_tags) != len(pred_tags):
        raise ValueError(f"{len(true_tags)} true sentences but {len(pred_tags)} predicted")
    for i, (t, p) in enumerate(zip(true_tags, pred_tags)):
        if len(t) != len(p):
            raise ValueError(f"sentence {i}: {len(t)} true tags but {len(p)} predicted")
        for tag in (*t, *p):
            if tag != "O" and (len(tag) < 3 or tag[:2] not in ("B-", "I-")):
                raise ValueError(f"sentence {i}: '{tag}' is not an IOB2 tag (O, B-TYPE or I-TYPE)")
    true_tags, pred_tags = [list(t) for t in true_tags if t], [list(p) for p in pred_tags if p]
    report: dict = {"f1": 0.0, "precision": 0.0, "recall": 0.0, "support": 0, "per_type": {}}
    if not true_tags:
        return report
    common = dict(scheme=IOB2, zero_division=0)
    precision, recall, f1, support = precision_recall_fscore_support(true_tags, pred_tags, average="micro",
                                                                     **common)
    report.update(f1=float(f1), precision=float(precision), recall=float(recall), support=int(support))
    types = unique_labels(true_tags, pred_tags, IOB2)
    if types:
        per = precision_recall_fscore_support(true_tags, pred_tags, average=None, **common)
        report["per_type"] = {typ: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                              for typ, p, r, f, s in zip(types, *per)}
    return report
