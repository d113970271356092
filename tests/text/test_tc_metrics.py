"""Text classification scores agree with scikit-learn's definitions."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from transferkit.metrics.text import classification_report, confusion_report, multilabel_report

CLASSES = ["a", "b", "c", "d"]


def test_single_label_report_matches_sklearn():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 3, 50)  # label d never occurs
    pred = np.where(rng.random(50) < 0.7, true, rng.integers(0, 4, 50))
    report = classification_report(true, pred, CLASSES)
    assert report["accuracy"] == pytest.approx(accuracy_score(true, pred))
    assert report["f1_macro"] == pytest.approx(f1_score(true, pred, average="macro"))
    assert report["f1_micro"] == pytest.approx(f1_score(true, pred, average="micro"))
    p, r, f, s = precision_recall_fscore_support(true, pred, labels=range(4), zero_division=0)
    for i, name in enumerate(CLASSES):
        row = report["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx((p[i], r[i], f[i], s[i]))
    assert report["confusion"] == confusion_matrix(true, pred, labels=range(4)).tolist()
    assert confusion_report(np.array(report["confusion"]), CLASSES) == report


def test_multi_label_report_matches_sklearn():
    rng = np.random.default_rng(1)
    true = rng.random((40, 4)) < 0.3
    pred = np.where(rng.random((40, 4)) < 0.8, true, ~true)
    report = multilabel_report(true, pred, CLASSES)
    assert report["accuracy"] == pytest.approx(accuracy_score(true, pred))  # exact match
    assert report["f1_macro"] == pytest.approx(f1_score(true, pred, average="macro", zero_division=0))
    assert report["f1_micro"] == pytest.approx(f1_score(true, pred, average="micro"))
    assert report["hamming_accuracy"] == pytest.approx((true == pred).mean())
    tn, fp, fn, tp = confusion_matrix(true[:, 2], pred[:, 2]).ravel()
    assert report["confusion"]["c"] == [[tn, fp], [fn, tp]]
