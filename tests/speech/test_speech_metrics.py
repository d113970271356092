"""WER and CER are corpus-level and equal to jiwer's own; per-utterance rows show where the errors are."""
from __future__ import annotations

import csv

import jiwer
import pytest

from transferkit.metrics.speech import utterance_rows, wer_cer, worst_utterances, write_utterance_csv

REFS = ["the cat sat on the mat", "hello world", "a b c d", "good morning everyone", "one"]
HYPS = ["the cat sat on mat", "hello there world", "a x c d", "", "one"]


def test_corpus_rates_equal_jiwer():
    scores = wer_cer(REFS, HYPS)
    assert scores["wer"] == pytest.approx(jiwer.wer(REFS, HYPS))
    assert scores["cer"] == pytest.approx(jiwer.cer(REFS, HYPS))
    # corpus-level: all errors over all reference words (not the mean of per-utterance rates)
    assert scores["words"] == 16
    assert (scores["substitutions"], scores["deletions"], scores["insertions"]) == (1, 4, 1)
    assert scores["wer"] == pytest.approx(6 / 16)
    assert scores["utterances"] == 5 and scores["utterances_wrong"] == 4 and scores["ser"] == pytest.approx(0.8)


@pytest.mark.parametrize("refs, hyps", [
    (["exactly right"], ["exactly right"]),
    (["some words here"], [""]),                      # empty hypothesis: all deletions
    (["", "a b"], ["spurious words", "a b"]),         # empty reference: insertions, no words
    (["x y"], ["completely different long answer"]),  # WER above 1
])
def test_edge_cases_equal_jiwer(refs, hyps):
    scores = wer_cer(refs, hyps)
    assert scores["wer"] == pytest.approx(jiwer.wer(refs, hyps))
    assert scores["cer"] == pytest.approx(jiwer.cer(refs, hyps))


def test_empty_reference_counts_insertions():
    scores = wer_cer(["", "a b"], ["spurious words", "a b"])
    assert scores["insertions"] == 2 and scores["words"] == 2 and scores["wer"] == pytest.approx(1.0)
    assert wer_cer([""], [""])["wer"] == 0.0
    assert wer_cer([""], ["hallucinated"])["wer"] > 0


def test_mismatched_or_empty_lists_are_refused():
    with pytest.raises(ValueError, match="2 references but 1"):
        wer_cer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no utterances"):
        wer_cer([], [])


def test_utterance_rows_and_csv(tmp_path):
    rows = utterance_rows([f"u{i}" for i in range(5)], REFS, HYPS)
    assert [r["id"] for r in rows] == ["u0", "u1", "u2", "u3", "u4"]
    for row, ref, hyp in zip(rows, REFS, HYPS):
        assert row["wer"] == pytest.approx(jiwer.wer(ref, hyp))
        assert row["cer"] == pytest.approx(jiwer.cer(ref, hyp))
        assert row["errors"] == row["substitutions"] + row["deletions"] + row["insertions"]
    assert (rows[3]["errors"], rows[3]["words"], rows[3]["deletions"]) == (3, 3, 3)
    assert sum(r["errors"] for r in rows) / sum(r["words"] for r in rows) == pytest.approx(wer_cer(REFS, HYPS)["wer"])

    assert [r["id"] for r in worst_utterances(rows, 2)] == ["u3", "u1"]
    assert "u4" not in [r["id"] for r in worst_utterances(rows, 10)]

    rows[0]["audio"] = "clips/u0.wav"
    out = write_utterance_csv(tmp_path / "utterances.csv", rows)
    with open(out, newline="", encoding="utf-8") as f:
        read = list(csv.DictReader(f))
    assert list(read[0])[:6] == ["id", "reference", "hypothesis", "errors", "words", "wer"]
    assert read[0]["audio"] == "clips/u0.wav" and read[1]["audio"] == ""
    assert read[3]["hypothesis"] == "" and read[3]["wer"] == "1.0000"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["utterances.csv"]
