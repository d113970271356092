"""text_classification through the CLI on a tiny set: train -> evaluate (.ckpt and .onnx agree) -> export (FP32 and
INT8, each runtime's accuracy) -> inference from the .onnx alone; dataset_convert; the real MiniLM learns."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

from transferkit.spec import load_spec
from transferkit.tasks import get_task

from text_helpers import TINY, assert_one_line_errors, default_spec, meta_of, onnx_alone, tkit
from text_tickets import LABELS, tickets, write_tsv

TASK = "text_classification"


def data_args(files: dict[str, Path]) -> list[str]:
    return [f"data.train_file={files['train']}", f"data.val_file={files['val']}"]


@pytest.fixture(scope="module")
def noisy_files(ticket_files, tmp_path_factory) -> dict[str, Path]:
    """The ticket files plus unusable rows in the training file."""
    root = tmp_path_factory.mktemp("noisy")
    train = root / "train.tsv"
    train.write_bytes(ticket_files["train"].read_bytes() + b"no label column\n\tbilling\nbad \xff byte\tbilling\n"
                      b"a new label\trefund\n")
    return {"train": train, "val": ticket_files["val"]}


@pytest.fixture(scope="module")
def trained(noisy_files, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("tc") / "train"
    assert tkit(TASK, "train", "-r", run, *data_args(noisy_files), *TINY, "train.epochs=8",
                "data.labels=[billing, shipping, technical]") == 0
    return run


def test_default_spec_reads_back(tmp_path, capsys):
    spec = default_spec(TASK, tmp_path, capsys)
    assert spec.model.backbone == "minilm-l6" and spec.train.optimizer == "adamw"
    assert spec.train.lr_scheduler == "linear" and spec.train.warmup_fraction == 0.1
    assert spec.train.backbone_lr_scale < 1 and spec.export.int8_target == "dynamic"
    partial = load_spec(get_task(TASK).spec_class, None, ["train.epochs=2"])  # a partial section keeps text defaults
    assert partial.train.optimizer == "adamw" and partial.train.epochs == 2


def test_training_counts_bad_rows_and_writes_a_self_contained_checkpoint(trained, noisy_files):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["train_sentences"] == 48 and metrics["val_sentences"] == 24
    skipped = metrics["skipped_sentences"]
    train = noisy_files["train"]
    assert skipped["count"] == 4 and set(skipped["files"]) == {f"{train}:{n}" for n in (49, 50, 51, 52)}
    assert "unknown label 'refund'" in skipped["files"][f"{train}:52"]
    assert metrics["best"]["val/f1_macro"] > 0.3  # one label for everything scores 1/6 (the real MiniLM: below)
    meta = meta_of(trained / "best.ckpt")
    assert meta.classes == LABELS and meta.backbone == "minilm-l6"
    assert [(i.name, i.dtype, i.shape) for i in meta.inputs] == [("input_ids", "int64", ("batch", "length")),
                                                                 ("attention_mask", "int64", ("batch", "length"))]
    assert meta.inputs[0].text.max_length == 128
    assert meta.arch["head"] == "sequence" and meta.arch["multi_label"] is False
    assert meta.arch["hf_config"]["hidden_size"] == 32 and '"WordPiece"' in meta.arch["tokenizer_json"]


@pytest.mark.export
def test_evaluate_export_and_inference_from_the_onnx_alone(trained, ticket_files, tmp_path, monkeypatch):
    run = tmp_path / "model"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns("tensorboard"))
    assert tkit(TASK, "evaluate", "-r", tmp_path / "eval", "-m", run / "best.ckpt", *data_args(ticket_files)) == 0
    eager = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {"accuracy", "f1_macro", "f1_micro", "per_class", "confusion", "counts"} <= set(eager)
    assert eager["num_sentences"] == 24 and eager["model"]["runtime"] == "pytorch"
    assert set(eager["per_class"]) == set(LABELS) and sum(map(sum, eager["confusion"])) == 24
    assert (tmp_path / "eval" / "confusion_matrix.png").stat().st_size > 0
    assert len((tmp_path / "eval" / "val_predictions.jsonl").read_text().splitlines()) == 24

    assert tkit(TASK, "export", "-r", tmp_path / "export", "-m", run / "best.ckpt", *data_args(ticket_files),
                "export.int8=true") == 0
    report = json.loads((tmp_path / "export" / "export_report.json").read_text())
    assert report["parity"]["ok"] and set(report["runtimes"]) == {"pytorch", "onnx_fp32", "onnx_int8"}
    assert report["runtimes"]["pytorch"]["accuracy"] == pytest.approx(eager["accuracy"])
    assert Path(report["tokenizer"]).read_text() == meta_of(run / "best.ckpt").arch["tokenizer_json"]
    graph = onnx.load(tmp_path / "export" / "model.onnx").graph
    assert [(i.name, i.type.tensor_type.elem_type, [d.dim_param for d in i.type.tensor_type.shape.dim])
            for i in graph.input] == [("input_ids", onnx.TensorProto.INT64, ["batch", "length"]),
                                      ("attention_mask", onnx.TensorProto.INT64, ["batch", "length"])]

    for name in ("model.onnx", "model_int8.onnx"):
        out = tmp_path / f"eval_{name}"
        assert tkit(TASK, "evaluate", "-r", out, "-m", tmp_path / "export" / name, *data_args(ticket_files)) == 0
        scored = json.loads((out / "metrics.json").read_text())
        assert scored["model"]["runtime"] == "onnx"
        tolerance = 1 / 24 if name == "model.onnx" else 3 / 24
        assert scored["accuracy"] == pytest.approx(eager["accuracy"], abs=tolerance)

    # inference needs only the .onnx: no checkpoint, no zoo, no model folder
    alone = onnx_alone(tmp_path / "export" / "model.onnx", run, monkeypatch, tmp_path)
    lines = tmp_path / "lines.txt"
    lines.write_bytes(b"my laptop has not arrived yet\n\n  \nthe router app crashes when I open it\n\xff\xfe broken\n"
                      b"please refund the camera payment on my card\n")
    assert tkit(TASK, "inference", "-r", tmp_path / "inf", "-m", alone, f"inference.file={lines}") == 0
    predictions = [json.loads(line) for line in (tmp_path / "inf" / "predictions.jsonl").read_text().splitlines()]
    assert [p["text"] for p in predictions] == ["my laptop has not arrived yet", "the router app crashes when I open it",
                                                "please refund the camera payment on my card"]
    for p in predictions:
        assert p["label"] in LABELS and p["score"] == p["top_k"][0]["score"] and len(p["top_k"]) == 3
        assert p["top_k"][0]["score"] >= p["top_k"][1]["score"] >= p["top_k"][2]["score"]
    summary = json.loads((tmp_path / "inf" / "inference.json").read_text())
    assert summary["sentences"] == 3 and summary["blank_lines"] == 2
    assert list(summary["skipped_sentences"]["files"]) == [f"{lines}:5"]

    jsonl = tmp_path / "lines.jsonl"
    jsonl.write_text('{"text": "the printer shows an error after the update", "id": 7}\n{"id": 8}\n')
    assert tkit(TASK, "inference", "-r", tmp_path / "inf_jsonl", "-m", alone,
                f"inference.file={jsonl}") == 0
    summary = json.loads((tmp_path / "inf_jsonl" / "inference.json").read_text())
    assert summary["sentences"] == 1 and "no 'text'" in summary["skipped_sentences"]["files"][f"{jsonl}:2"]


def test_inference_from_the_checkpoint_writes_the_same_labels_as_evaluate_scores(trained, tmp_path):
    rows = tickets(6, seed=7)
    lines = tmp_path / "lines.txt"
    lines.write_text("".join(text + "\n" for text, _ in rows))
    assert tkit(TASK, "inference", "-r", tmp_path / "inf", "-m", trained / "best.ckpt", f"inference.file={lines}",
                "inference.top_k=1") == 0
    predictions = [json.loads(line) for line in (tmp_path / "inf" / "predictions.jsonl").read_text().splitlines()]
    assert [p["where"] for p in predictions] == [f"{lines}:{n}" for n in range(1, 7)]
    assert all(len(p["top_k"]) == 1 for p in predictions)


def test_dataset_convert_writes_name_tsv_jsonl_and_tao_form(tmp_path):
    csv = tmp_path / "tickets.csv"
    csv.write_text('id,text,label\n1,"refund, please",billing\n2,where is my parcel,shipping\n3,broken,\n')
    assert tkit(TASK, "dataset_convert", "-r", tmp_path / "tao", f"data.train_file={csv}",
                "dataset_convert.output_format=tao") == 0
    out = tmp_path / "tao" / "converted"
    assert (out / "tickets.tsv").read_text() == "sentence\tlabel\nrefund, please\t0\nwhere is my parcel\t1\n"
    assert (out / "labels.txt").read_text() == "billing\nshipping\n"
    report = json.loads((tmp_path / "tao" / "dataset_convert.json").read_text())
    assert report["train"]["skipped"]["files"] == {f"{csv}:4": "no label"}

    # TAO's integer TSV + labels file -> label names, and -> JSON lines
    assert tkit(TASK, "dataset_convert", "-r", tmp_path / "names", f"data.train_file={out / 'tickets.tsv'}",
                f"data.labels_file={out / 'labels.txt'}") == 0
    assert (tmp_path / "names" / "converted" / "tickets.tsv").read_text() == \
        "refund, please\tbilling\nwhere is my parcel\tshipping\n"
    assert tkit(TASK, "dataset_convert", "-r", tmp_path / "jsonl", f"data.train_file={out / 'tickets.tsv'}",
                f"data.labels_file={out / 'labels.txt'}", "dataset_convert.output_format=jsonl") == 0
    rows = [json.loads(line) for line in (tmp_path / "jsonl" / "converted" / "tickets.jsonl").read_text().splitlines()]
    assert rows == [{"text": "refund, please", "label": "billing"}, {"text": "where is my parcel", "label": "shipping"}]


def test_user_mistakes_are_one_line_errors(trained, tmp_path, capsys):
    cases = [
        (["train", "-r", tmp_path / "a"], "data.train_file is not set"),
        (["train", "-r", tmp_path / "b", f"data.train_file={tmp_path / 'nope.tsv'}"], "nope.tsv does not exist"),
        (["train", "-r", tmp_path / "c", "model.max_length=1000"], "model.max_length"),
        (["inference", "-r", tmp_path / "d", "-m", trained / "best.ckpt"], "inference.file is not set"),
        (["evaluate", "-r", tmp_path / "e", "-m", trained / "best.ckpt"], "data.val_file"),
        (["export", "-r", tmp_path / "g", "-m", trained / "best.ckpt", "export.int8=true"], "data.val_file"),
        (["train", "-r", tmp_path / "f", "model.pretrained=runs/x.pth", f"data.train_file={trained / 'spec.yaml'}",
          "data.format=tsv"], "model.pretrained"),
    ]
    assert_one_line_errors(TASK, cases, capsys)


@pytest.mark.slow
def test_the_pretrained_minilm_learns_tickets_in_a_few_steps(tmp_path):
    train = write_tsv(tmp_path / "train.tsv", tickets(24, seed=3))
    val = write_tsv(tmp_path / "val.tsv", tickets(30, seed=4))
    assert tkit(TASK, "train", "-r", tmp_path / "run", f"data.train_file={train}", f"data.val_file={val}",
                "train.epochs=3", "train.batch_size=8", "train.histograms=false",
                # nine steps: a constant, higher rate than the defaults (which spread 8 epochs of a few hundred sentences)
                "train.learning_rate=5e-3", "train.lr_scheduler=constant", "train.warmup_fraction=0") == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["best"]["val/f1_macro"] > 0.8
    report = json.loads((tmp_path / "run" / "load_report.json").read_text())
    assert set(report["reinitialised"]) == {"model.classifier.weight", "model.classifier.bias"}
    assert report["counts"]["loaded"] > 100
