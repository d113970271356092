"""entity_report: entity-level scores with seqeval in strict IOB2 mode, checked against an exact-span count."""
from __future__ import annotations

import random
import warnings

import pytest

from transferkit.metrics.text import entity_report

POOL = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]


def exact_spans(tags: list[str]) -> set[tuple[str, int, int]]:
    """Strict IOB2 entities written independently: a B-X and the I-X that directly follow it."""
    found = set()
    for i, tag in enumerate(tags):
        if tag.startswith("B-"):
            end = i + 1
            while end < len(tags) and tags[end] == "I-" + tag[2:]:
                end += 1
            found.add((tag[2:], i, end))
    return found


def counted(true_tags, pred_tags, typ=None):
    tp = n_true = n_pred = 0
    for t, p in zip(true_tags, pred_tags):
        ts = {s for s in exact_spans(t) if typ in (None, s[0])}
        ps = {s for s in exact_spans(p) if typ in (None, s[0])}
        tp, n_true, n_pred = tp + len(ts & ps), n_true + len(ts), n_pred + len(ps)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1, n_true


def test_agrees_with_an_exact_span_count_on_random_sequences():
    rng = random.Random(2024)
    for _ in range(60):
        true_tags, pred_tags = [], []
        for _ in range(rng.randint(1, 8)):
            n = rng.randint(1, 12)
            t = [rng.choice(POOL) for _ in range(n)]
            p = [tag if rng.random() < 0.6 else rng.choice(POOL) for tag in t]  # mostly right, with orphan I-X
            true_tags.append(t)
            pred_tags.append(p)
        report = entity_report(true_tags, pred_tags)
        precision, recall, f1, support = counted(true_tags, pred_tags)
        assert (report["precision"], report["recall"], report["f1"]) == pytest.approx((precision, recall, f1))
        assert report["support"] == support
        types = {s[0] for tags in true_tags + pred_tags for s in exact_spans(tags)}
        assert set(report["per_type"]) == types
        for typ, scores in report["per_type"].items():
            p, r, f, s = counted(true_tags, pred_tags, typ)
            assert (scores["precision"], scores["recall"], scores["f1"]) == pytest.approx((p, r, f))
            assert scores["support"] == s


def test_a_known_example():
    true_tags = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred_tags = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    report = entity_report(true_tags, pred_tags)
    assert report["precision"] == pytest.approx(2 / 3) and report["recall"] == pytest.approx(2 / 3)
    assert report["per_type"] == {
        "LOC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
        "ORG": {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1},
        "PER": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
    }


def test_strict_mode_is_used_where_seqeval_default_mode_differs():
    from seqeval.metrics import f1_score

    true_tags = [["O", "B-PER", "I-PER", "O"]]
    pred_tags = [["O", "I-PER", "I-PER", "O"]]  # no B-: conlleval-style default mode still finds PER
    assert f1_score(true_tags, pred_tags) == 1.0
    report = entity_report(true_tags, pred_tags)
    assert report["f1"] == 0.0 and report["precision"] == 0.0 and report["recall"] == 0.0
    assert report["per_type"]["PER"]["support"] == 1


@pytest.mark.parametrize("true_tags, pred_tags, expected", [
    ([["O", "O"]], [["O", "O"]], (0.0, 0.0, 0.0, 0)),  # nothing to find, nothing found
    ([["O", "O"]], [["B-PER", "O"]], (0.0, 0.0, 0.0, 0)),  # no entity in the truth
    ([["B-PER", "O"]], [["O", "O"]], (0.0, 0.0, 0.0, 1)),  # no entity predicted
    ([], [], (0.0, 0.0, 0.0, 0)),
    ([[]], [[]], (0.0, 0.0, 0.0, 0)),
])
def test_zero_divisions_give_zero_without_warnings(true_tags, pred_tags, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = entity_report(true_tags, pred_tags)
    assert (report["precision"], report["recall"], report["f1"], report["support"]) == expected
    assert all(isinstance(v, float) for v in (report["precision"], report["recall"], report["f1"]))


def test_report_is_plain_json_data():
    import json

    report = entity_report([["B-PER", "I-PER"]], [["B-PER", "I-PER"]])
    assert json.loads(json.dumps(report)) == report and report["f1"] == 1.0


def test_mismatched_or_non_iob2_input_is_refused():
    with pytest.raises(ValueError, match="2 true sentences but 1 predicted"):
        entity_report([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="sentence 0: 2 true tags but 1 predicted"):
        entity_report([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="'S-PER' is not an IOB2 tag"):
        entity_report([["S-PER"]], [["O"]])
