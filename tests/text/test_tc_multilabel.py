"""Multi-label text classification: several labels per sentence (comma-separated in TSV, a list in JSON lines),
sigmoid scores with a threshold per label, metrics per label plus micro/macro F1."""
from __future__ import annotations

import json
import random

import pytest

from transferkit.cli import main
from transferkit.engine.checkpoint import read_checkpoint

from text_helpers import TINY
from text_tickets import LABELS, TEMPLATES, THINGS

TASK = "text_classification"


def multi_rows(count: int, seed: int) -> list[tuple[str, list[str]]]:
    """Sentences about one or two of the ticket topics (joined by 'and also')."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        labels = sorted(rng.sample(LABELS, 1 + i % 2))
        parts = [rng.choice(TEMPLATES[y]).format(thing=rng.choice(THINGS)) for y in labels]
        rows.append((" and also ".join(parts), labels))
    return rows


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi")
    train = root / "train.tsv"
    train.write_text("".join(f"{t}\t{','.join(y)}\n" for t, y in multi_rows(48, 0)))
    val = root / "val.jsonl"
    val.write_text("".join(json.dumps({"text": t, "labels": y}) + "\n" for t, y in multi_rows(18, 1)))
    return train, val


@pytest.fixture(scope="module")
def trained(files, tmp_path_factory):
    train, val = files
    run = tmp_path_factory.mktemp("multi_run") / "train"
    assert main([TASK, "train", "-r", str(run), f"data.train_file={train}", f"data.val_file={val}", *TINY,
                 "train.epochs=8", "model.multi_label=true"]) == 0
    return run


def test_training_and_evaluation_score_each_label(trained, files, tmp_path):
    meta, _ = read_checkpoint(trained / "best.ckpt", task=TASK)
    assert meta.arch["multi_label"] is True and meta.classes == LABELS
    assert main([TASK, "evaluate", "-r", str(tmp_path / "eval"), "-m", str(trained / "best.ckpt"),
                 f"data.val_file={files[1]}", "inference.thresholds={technical: 0.3}"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["multi_label"] is True and metrics["num_sentences"] == 18
    assert {"accuracy", "hamming_accuracy", "f1_macro", "f1_micro"} <= set(metrics)
    assert set(metrics["per_class"]) == set(LABELS) and set(metrics["confusion"]) == set(LABELS)
    assert metrics["thresholds"] == pytest.approx({"billing": 0.5, "shipping": 0.5, "technical": 0.3})
    assert sum(metrics["counts"]["true"].values()) == 27  # 9 sentences with one label, 9 with two
    assert metrics["f1_micro"] > 0.5
    assert (tmp_path / "eval" / "confusion_matrix.png").is_file()


def test_inference_applies_per_label_thresholds(trained, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("".join(t + "\n" for t, _ in multi_rows(6, 2)))
    thresholds = {"billing": 0.2, "technical": 0.9}
    assert main([TASK, "inference", "-r", str(tmp_path / "inf"), "-m", str(trained / "best.ckpt"),
                 f"inference.file={lines}", "inference.threshold=0.6",
                 "inference.thresholds={billing: 0.2, technical: 0.9}"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "inf" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for row in rows:
        assert set(row["scores"]) == set(LABELS)
        assert row["labels"] == [c for c in LABELS if row["scores"][c] >= thresholds.get(c, 0.6) - 1e-4]
    summary = json.loads((tmp_path / "inf" / "inference.json").read_text())
    assert summary["thresholds"] == pytest.approx({"billing": 0.2, "shipping": 0.6, "technical": 0.9})

    assert main([TASK, "inference", "-r", str(tmp_path / "all"), "-m", str(trained / "best.ckpt"),
                 f"inference.file={lines}", "inference.threshold=0.0001"]) == 0
    every = [json.loads(line) for line in (tmp_path / "all" / "predictions.jsonl").read_text().splitlines()]
    assert all(row["labels"] == list(LABELS) for row in every)


def test_a_threshold_for_a_label_the_model_lacks_is_refused(trained, tmp_path, capsys):
    lines = tmp_path / "lines.txt"
    lines.write_text("hello\n")
    assert main([TASK, "inference", "-r", str(tmp_path / "inf"), "-m", str(trained / "best.ckpt"),
                 f"inference.file={lines}", "inference.thresholds={refunds: 0.3}"]) == 2
    err = capsys.readouterr().err
    assert "inference.thresholds" in err and "refunds" in err and len(err.strip().splitlines()) == 1
