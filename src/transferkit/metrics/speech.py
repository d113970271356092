"""Speech recognition metrics: corpus-level word and character error rates computed by jiwer, and
per-utterance rows for the CSV that shows which utterances went wrong.

Corpus-level means the errors of all utterances over the words of all references (not a mean of
per-utterance rates), as jiwer computes it for lists. Words are whitespace-separated; characters include
the spaces between words (jiwer's CER). The caller normalises both sides first (audio/text.py).
An empty reference adds its hypothesis's words as insertions and no reference words; when the references
hold no words at all, the rate is the error count (jiwer divides by max(words, 1)), so a silent val set
scored against silence gives 0 and anything hallucinated gives a rate above zero.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Sequence

UTTERANCE_COLUMNS = ("id", "reference", "hypothesis", "errors", "words", "wer",
                     "substitutions", "deletions", "insertions", "cer")


def _check(refs: Sequence[str], hyps: Sequence[str]) -> None:
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("no utterances to score")


def wer_cer(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, Any]:
    """Corpus-level {wer, cer, words, substitutions, deletions, insertions, hits, chars, char_errors,
    utterances, utterances_wrong, ser} over aligned lists of normalised references and hypotheses."""
    import jiwer

    _check(refs, hyps)
    refs, hyps = [str(r) for r in refs], [str(h) for h in hyps]
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    wrong = sum(1 for r, h in zip(refs, hyps) if r.split() != h.split())
    return {
        "wer": float(words.wer),
        "cer": float(chars.cer),
        "words": int(words.hits + words.substitutions + words.deletions),
        "substitutions": int(words.substitutions),
        "deletions": int(words.deletions),
        "insertions": int(words.insertions),
        "hits": int(words.hits),
        "chars": int(chars.hits + chars.substitutions + chars.deletions),
        "char_errors": int(chars.substitutions + chars.deletions + chars.insertions),
        "utterances": len(refs),
        "utterances_wrong": wrong,
        "ser": wrong / len(refs),  # sentence (utterance) error rate
    }


def utterance_rows(ids: Sequence[str], refs: Sequence[str], hyps: Sequence[str]) -> list[dict[str, Any]]:
    """One row per utterance, in input order: id, reference, hypothesis, errors (S + D + I), words (in the
    reference), wer (errors / max(words, 1)), substitutions, deletions, insertions, cer."""
    import jiwer

    _check(refs, hyps)
    if len(ids) != len(refs):
        raise ValueError(f"{len(ids)} ids but {len(refs)} references")
    rows = []
    for uid, ref, hyp in zip(ids, refs, hyps):
        w = jiwer.process_words(str(ref), str(hyp))
        c = jiwer.process_characters(str(ref), str(hyp))
        count = w.hits + w.substitutions + w.deletions
        errors = w.substitutions + w.deletions + w.insertions
        rows.append({"id": str(uid), "reference": str(ref), "hypothesis": str(hyp), "errors": int(errors),
                     "words": int(count), "wer": errors / max(count, 1), "substitutions": int(w.substitutions),
                     "deletions": int(w.deletions), "insertions": int(w.insertions), "cer": float(c.cer)})
    return rows


def worst_utterances(rows: Sequence[dict[str, Any]], count: int = 5) -> list[dict[str, Any]]:
    """The `count` rows with most errors (ties: higher WER first, then input order); rows without errors never."""
    ranked = sorted((r for r in rows if r["errors"] > 0), key=lambda r: (-r["errors"], -r["wer"]))
    return ranked[:count]


def write_utterance_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> Path:
    """Write per-utterance rows as CSV atomically: the standard columns first, then any extra keys rows carry
    (e.g. audio path, duration) in first-seen order; rates with 4 decimals."""
    from ..io import atomic_write_text

    columns = list(UTTERANCE_COLUMNS)
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    return atomic_write_text(path, buffer.getvalue())
