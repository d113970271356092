"""The `sentences` demo (text_classification): TSV files in TAO's forms, balanced, varied, held-out val."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from transferkit.cli import main
from transferkit.data.demo import DEMO_DATASETS, build_demo
from transferkit.data.text_demo import TICKET_CLASSES
from transferkit.errors import DataError


def _rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]


def _key(text: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z ]", "", text.lower()).split())


def test_registered_for_text_classification():
    assert DEMO_DATASETS["sentences"].task == "text_classification"
    assert DEMO_DATASETS["sentences"].options == {"per_class": 60, "val_per_class": 20, "num_test": 25}


def test_default_build_has_the_counts_it_reports_in_every_form(tmp_path):
    out = tmp_path / "s"
    summary = build_demo("sentences", out)
    assert summary["classes"] == list(TICKET_CLASSES)
    assert summary["counts"]["train"] == dict.fromkeys(TICKET_CLASSES, 60)
    assert summary["counts"]["val"] == dict.fromkeys(TICKET_CLASSES, 20)
    assert sum(summary["counts"]["test"].values()) == 25
    assert json.loads((out / "demo.json").read_text())["counts"] == summary["counts"]
    names = (out / "labels.txt").read_text().splitlines()
    assert names == list(TICKET_CLASSES)
    for split in ("train", "val"):
        named, numbered = _rows(out / f"{split}.tsv"), _rows(out / f"{split}_int.tsv")
        assert len(named) == sum(summary["counts"][split].values())
        assert [(s, names[int(i)]) for s, i in numbered] == [(s, label) for s, label in named]
    test = _rows(out / "test.tsv")
    assert [s for s, _ in test] == (out / "test_lines.txt").read_text(encoding="utf-8").splitlines()


def test_every_line_is_a_sentence_a_tab_and_a_known_label(tmp_path):
    out = tmp_path / "s"
    build_demo("sentences", out, per_class=40, val_per_class=20)
    for name in ("train.tsv", "val.tsv", "test.tsv", "train_int.tsv", "val_int.tsv"):
        text = (out / name).read_text(encoding="utf-8")
        assert text.endswith("\n") and "\r" not in text
        for fields in _rows(out / name):
            assert len(fields) == 2, fields
            sentence, label = fields
            assert 4 <= len(sentence.split()) <= 40 and sentence == sentence.strip()
            assert label in TICKET_CLASSES if "_int" not in name else label in {"0", "1", "2", "3", "4"}
    assert _rows(out / "train.tsv")[0][1] in TICKET_CLASSES  # no header line


def test_no_sentence_repeats_within_or_across_splits(tmp_path):
    out = tmp_path / "s"
    build_demo("sentences", out, per_class=150, val_per_class=40, num_test=40)
    keys = [_key(s) for split in ("train", "val", "test") for s, _ in _rows(out / f"{split}.tsv")]
    assert len(keys) == len(set(keys)) == 150 * 5 + 40 * 5 + 40


def test_val_does_not_depend_on_the_training_size_and_smaller_train_is_a_prefix(tmp_path):
    build_demo("sentences", tmp_path / "small", per_class=10)
    build_demo("sentences", tmp_path / "big", per_class=200)
    for name in ("val.tsv", "test_lines.txt", "labels.txt"):
        assert (tmp_path / "small" / name).read_bytes() == (tmp_path / "big" / name).read_bytes()
    small, big = _rows(tmp_path / "small" / "train.tsv"), _rows(tmp_path / "big" / "train.tsv")
    assert big[:len(small)] == small
    assert {label for _, label in big[:10]} == set(TICKET_CLASSES)  # classes take turns: any head is balanced


def test_messages_are_varied_and_some_phrasings_only_appear_in_val(tmp_path):
    out = tmp_path / "s"
    summary = build_demo("sentences", out, per_class=200, val_per_class=60)
    train = [s.lower() for s, _ in _rows(out / "train.tsv")]
    val = [s.lower() for s, _ in _rows(out / "val.tsv")]
    lengths = [len(s.split()) for s in train]
    assert min(lengths) <= 6 and max(lengths) >= 20
    assert any("but" in s and ("fine" in s or "not a" in s or "not about" in s) for s in train)  # negations
    # The same words in several classes: "order" and "account" are not giveaways.
    rows = _rows(out / "train.tsv")
    assert len({label for s, label in rows if "order" in s.lower()}) >= 3
    assert len({label for s, label in rows if "account" in s.lower()}) >= 3
    heldout = "the page keeps reloading and i lose what i typed"
    assert not any(heldout in s for s in train) and any(heldout in s for s in val)
    assert summary["heldout_phrasings"]["val"] > 0 and summary["near_misses"]["train"] > 0


def test_large_training_sets_are_offered(tmp_path):
    summary = build_demo("sentences", tmp_path / "s", per_class=1000, val_per_class=5, num_test=5)
    assert summary["counts"]["train"] == dict.fromkeys(TICKET_CLASSES, 1000)


def test_command_line_builds_it(tmp_path, capsys):
    assert main(["data", "demo", "sentences", str(tmp_path / "s"), "per_class=3", "val_per_class=2"]) == 0
    assert "built demo dataset 'sentences'" in capsys.readouterr().out
    assert len(_rows(tmp_path / "s" / "train.tsv")) == 15 and len(_rows(tmp_path / "s" / "val.tsv")) == 10
    with pytest.raises(DataError, match="per_class=0 must be at least 1"):
        build_demo("sentences", tmp_path / "x", per_class=0)
    assert main(["data", "demo", "sentences", str(tmp_path / "y"), "per_class=lots"]) == 2
