"""Text metrics: entity-level precision/recall/F1 for token classification (entity_report)."""
from __future__ import annotations


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
