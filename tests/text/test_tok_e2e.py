"""token_classification through the CLI on a tiny set: train on CoNLL (bad sentences named file:line) and NeMo,
evaluate (.ckpt and .onnx agree, truncated words scored as O), export (int64 inputs, FP32 and INT8 F1), inference
from the .onnx alone with character offsets, adding entity types, prune -> retrain, dataset_convert."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
import torch

from transferkit.data.text_demo import detokenize
from transferkit.spec import load_spec
from transferkit.tasks import get_task
from transferkit.text.tokenizer import TextTokenizer

from text_helpers import TINY, assert_one_line_errors, default_spec, meta_of, onnx_alone, tkit
from tok_helpers import TASK, conll_args, entity_files, read_conll_blocks

pytestmark = pytest.mark.usefixtures("one_thread")

TYPES = ("LOC", "ORG", "PER", "PRODUCT")
TAGS = ("O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER", "B-PRODUCT", "I-PRODUCT")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return entity_files(tmp_path_factory.mktemp("entities") / "demo")


@pytest.fixture(scope="module")
def noisy(files, tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """The training file plus three unusable sentences; {problem: line number}."""
    train = tmp_path_factory.mktemp("noisy") / "train.txt"
    original = files["train"].read_bytes()
    n = len(original.decode().splitlines())
    train.write_bytes(original + b"\nBroken O extra\nline O\n\n\xff\xfe O\n\nParis I-LOC\nis O\nnice O\n")
    return train, {"wrong_column_count": n + 2, "not_utf8": n + 5, "invalid_sequence": n + 7}


@pytest.fixture(scope="module")
def trained(files, noisy, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("tok") / "train"
    assert tkit(TASK, "train", "-r", run, f"data.train_file={noisy[0]}", f"data.val_file={files['val']}", *TINY,
                "train.epochs=12") == 0
    return run


def test_tok_default_spec_reads_back(tmp_path, capsys):
    spec = default_spec(TASK, tmp_path, capsys)
    assert spec.model.backbone == "minilm-l6" and spec.train.optimizer == "adamw" and spec.train.backbone_lr_scale < 1
    assert spec.data.format == "auto" and spec.data.tag_scheme == "auto" and spec.data.invalid_tags == "skip"
    assert spec.export.int8_target == "dynamic" and spec.dataset_convert.output_scheme == "iob2"


def test_tok_training_names_bad_sentences_and_writes_a_self_contained_checkpoint(trained, noisy):
    train, lines = noisy
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["classes"] == list(TAGS)
    assert metrics["train_sentences"] == 24 and metrics["val_sentences"] == 12
    skipped = metrics["skipped_sentences"]
    assert skipped["count"] == 3 and set(skipped["files"]) == {f"{train}:{n}" for n in lines.values()}
    assert "continues nothing" in skipped["files"][f"{train}:{lines['invalid_sequence']}"] or \
        "I-LOC" in skipped["files"][f"{train}:{lines['invalid_sequence']}"]
    problems = metrics["data_problems"]["data.train_file"]
    assert problems["tag_scheme"] == "iob2" and problems["truncated_words"] == 0
    assert problems["tag_problems"] == {"wrong_column_count": 1, "not_utf8": 1, "invalid_sequence": 1}
    assert metrics["best"]["val/f1"] is not None
    meta = meta_of(trained / "best.ckpt")
    assert meta.classes == TAGS and meta.arch["head"] == "token" and meta.task == TASK
    assert [(i.name, i.dtype, i.shape) for i in meta.inputs] == [("input_ids", "int64", ("batch", "length")),
                                                                 ("attention_mask", "int64", ("batch", "length"))]
    assert meta.arch["hf_config"]["hidden_size"] == 32 and '"WordPiece"' in meta.arch["tokenizer_json"]


def test_tok_evaluate_scores_entities_and_names_bad_val_sentences(trained, files, tmp_path):
    val = tmp_path / "val.txt"
    val.write_text(files["val"].read_text() + "\nMoney B-MONEY\nbags O\n\nParis I-LOC\nis O\n")
    n = len(files["val"].read_text().splitlines())
    assert tkit(TASK, "evaluate", "-r", tmp_path / "eval", "-m", trained / "best.ckpt", f"data.val_file={val}") == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {"f1", "precision", "recall", "per_type", "token_accuracy", "counts"} <= set(metrics)
    assert metrics["labels"] == list(TAGS) and metrics["num_sentences"] == 12
    assert metrics["model"]["runtime"] == "pytorch"
    assert set(metrics["per_type"]) <= set(TYPES)
    true_entities = sum(metrics["counts"]["true_entities"].values())
    assert metrics["support"] == true_entities > 0
    skipped = metrics["skipped_sentences"]["files"]
    assert set(skipped) == {f"{val}:{n + 2}", f"{val}:{n + 5}"} and "not in the label set" in skipped[f"{val}:{n + 2}"]
    assert metrics["words_without_prediction"]["count"] == 0
    rows = [json.loads(line) for line in (tmp_path / "eval" / "val_predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(len(r["words"]) == len(r["true"]) == len(r["predicted"]) for r in rows)

    # repair instead of skip: the stray I-LOC begins an entity, and the sentence is scored
    assert tkit(TASK, "evaluate", "-r", tmp_path / "repair", "-m", trained / "best.ckpt", f"data.val_file={val}",
                "data.invalid_tags=repair") == 0
    repaired = json.loads((tmp_path / "repair" / "metrics.json").read_text())
    assert repaired["num_sentences"] == 13 and repaired["repaired"]["count"] == 1
    assert list(repaired["skipped_sentences"]["files"]) == [f"{val}:{n + 2}"]


def test_tok_nemo_files_train_and_score_like_conll(trained, files, tmp_path):
    nemo = [f"data.train_file={files['text_train']}", f"data.train_labels={files['labels_train']}",
            f"data.val_file={files['text_val']}", f"data.val_labels={files['labels_val']}"]
    assert tkit(TASK, "train", "-r", tmp_path / "nemo", *nemo, *TINY, "train.epochs=1") == 0
    metrics = json.loads((tmp_path / "nemo" / "metrics.json").read_text())
    assert metrics["classes"] == list(TAGS) and metrics["train_sentences"] == 24 and metrics["val_sentences"] == 12

    scores = {}
    for name, args in (("conll", [f"data.val_file={files['val']}"]),
                       ("nemo", [f"data.val_file={files['text_val']}", f"data.val_labels={files['labels_val']}",
                                 "data.format=nemo"])):
        assert tkit(TASK, "evaluate", "-r", tmp_path / f"eval_{name}", "-m", trained / "best.ckpt", *args) == 0
        scores[name] = json.loads((tmp_path / f"eval_{name}" / "metrics.json").read_text())
    assert scores["nemo"]["counts"] == scores["conll"]["counts"]
    assert scores["nemo"]["f1"] == pytest.approx(scores["conll"]["f1"])


def test_tok_words_beyond_max_length_are_counted_and_scored_as_o(files, tmp_path):
    run = tmp_path / "short"
    assert tkit(TASK, "train", "-r", run, *conll_args(files), *TINY, "model.max_length=8", "train.epochs=1") == 0
    metrics = json.loads((run / "metrics.json").read_text())
    cut = metrics["data_problems"]["data.train_file"]
    assert cut["truncated_words"] > 0 and cut["truncated_sentences"] > 0
    assert any("model.max_length=8" in w and f"{cut['truncated_words']} word(s)" in w for w in metrics["warnings"])

    assert tkit(TASK, "evaluate", "-r", tmp_path / "eval", "-m", run / "best.ckpt", *conll_args(files)) == 0
    scored = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    blocks = read_conll_blocks(files["val"])
    missing = scored["words_without_prediction"]
    assert missing["count"] > 0 and missing["max_length"] == 8 and "predicted O" in missing["note"]
    assert scored["counts"]["words"] == sum(len(b) for b in blocks)  # every word scored, none dropped
    assert scored["support"] == sum(tag.startswith("B-") for b in blocks for _, tag in b)
    rows = [json.loads(line) for line in (tmp_path / "eval" / "val_predictions.jsonl").read_text().splitlines()]
    cut_rows = [r for r in rows if r.get("words_without_prediction")]
    assert cut_rows and all(r["predicted"][i] == "O" for r in cut_rows for i in r["words_without_prediction"])


@pytest.mark.export
def test_tok_export_evaluate_onnx_and_inference_from_the_onnx_alone(trained, noisy, files, tmp_path, monkeypatch):
    run = tmp_path / "model"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns("tensorboard"))
    seen = [f"data.train_file={files['train']}", f"data.val_file={files['train']}"]  # names it has learned
    assert tkit(TASK, "evaluate", "-r", tmp_path / "eval", "-m", run / "best.ckpt", *seen) == 0
    eager = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert eager["f1"] > 0.3  # the tiny model has learned its training sentences: the comparisons below mean something

    assert tkit(TASK, "export", "-r", tmp_path / "export", "-m", run / "best.ckpt", *seen, "export.int8=true") == 0
    report = json.loads((tmp_path / "export" / "export_report.json").read_text())
    assert report["parity"]["ok"] and set(report["runtimes"]) == {"pytorch", "onnx_fp32", "onnx_int8"}
    assert report["runtimes"]["pytorch"]["f1"] == pytest.approx(eager["f1"])
    assert 0 <= report["runtimes"]["onnx_int8"]["f1"] <= 1
    graph = onnx.load(tmp_path / "export" / "model.onnx").graph
    assert [(i.name, i.type.tensor_type.elem_type, [d.dim_param for d in i.type.tensor_type.shape.dim])
            for i in graph.input] == [("input_ids", onnx.TensorProto.INT64, ["batch", "length"]),
                                      ("attention_mask", onnx.TensorProto.INT64, ["batch", "length"])]
    assert [[d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.output] == [
        ["batch", "length", len(TAGS)]]
    assert Path(report["tokenizer"]).read_text() == meta_of(run / "best.ckpt").arch["tokenizer_json"]

    for name, tolerance in (("model.onnx", 0.03), ("model_int8.onnx", 0.15)):
        out = tmp_path / f"eval_{name}"
        assert tkit(TASK, "evaluate", "-r", out, "-m", tmp_path / "export" / name, *seen) == 0
        scored = json.loads((out / "metrics.json").read_text())
        assert scored["model"]["runtime"] == "onnx" and scored["labels"] == list(TAGS)
        assert scored["f1"] == pytest.approx(eager["f1"], abs=tolerance)

    # inference needs only the .onnx: no checkpoint, no zoo, no model folder
    alone = onnx_alone(tmp_path / "export" / "model.onnx", run, monkeypatch, tmp_path)
    sentences = [detokenize([w for w, _ in block]) for block in read_conll_blocks(files["train"])[:6]]
    lines = tmp_path / "lines.txt"
    lines.write_bytes(("\n".join(sentences[:3]) + "\n\n  Zoë  met them in Gdańsk (again).\n").encode() +
                      b"\xff\xfe broken\n" + ("\n".join(sentences[3:]) + "\n").encode())
    assert tkit(TASK, "inference", "-r", tmp_path / "inf", "-m", alone, f"inference.file={lines}") == 0
    predictions = [json.loads(line) for line in (tmp_path / "inf" / "predictions.jsonl").read_text().splitlines()]
    texts = sentences[:3] + ["Zoë  met them in Gdańsk (again)."] + sentences[3:]
    assert [p["text"] for p in predictions] == texts
    tokenizer = TextTokenizer(meta_of(trained / "best.ckpt").arch["tokenizer_json"], 128)
    multi_piece = 0
    for p in predictions:
        text = p["text"]
        for w in p["words"]:
            assert text[w["start"]:w["end"]] == w["word"] and w["tag"] in TAGS and 0 < w["score"] <= 1
            multi_piece += len(tokenizer.encode_words([[w["word"]]])[0].ids) > 3  # [CLS] pieces [SEP]
        for e in p["entities"]:
            assert set(e) == {"type", "start", "end", "text", "score"} and e["type"] in TYPES
            assert text[e["start"]:e["end"]] == e["text"] and 0 < e["score"] <= 1
    assert multi_piece > 0  # made-up names split into several word pieces
    unicode_line = predictions[3]
    assert [w["word"] for w in unicode_line["words"]] == ["Zoë", "met", "them", "in", "Gdańsk", "(", "again", ")",
                                                          "."]
    assert [(w["start"], w["end"]) for w in unicode_line["words"]][4] == (17, 23)
    found = sum(len(p["entities"]) for p in predictions)
    assert found > 0  # sentences from its training data
    summary = json.loads((tmp_path / "inf" / "inference.json").read_text())
    assert summary["sentences"] == 7 and summary["blank_lines"] == 1 and summary["entities"] == found
    assert list(summary["skipped_sentences"]["files"]) == [f"{lines}:6"]

    jsonl = tmp_path / "lines.jsonl"
    jsonl.write_text(json.dumps({"text": sentences[0], "id": 7}) + "\n" + '{"id": 8}\n')
    assert tkit(TASK, "inference", "-r", tmp_path / "inf_jsonl", "-m", alone,
                f"inference.file={jsonl}") == 0
    first = json.loads((tmp_path / "inf_jsonl" / "predictions.jsonl").read_text().splitlines()[0])
    assert first["entities"] == predictions[0]["entities"] and first["where"] == f"{jsonl}:1"
    summary = json.loads((tmp_path / "inf_jsonl" / "inference.json").read_text())
    assert summary["sentences"] == 1 and "no 'text'" in summary["skipped_sentences"]["files"][f"{jsonl}:2"]


def test_tok_adding_entity_types_keeps_the_rows_of_shared_tags(files, tmp_path):
    without = tmp_path / "no_product.txt"
    without.write_text("".join(line.replace("B-PRODUCT", "O").replace("I-PRODUCT", "O") + "\n"
                               for line in files["train"].read_text().splitlines()))
    first = tmp_path / "first"
    assert tkit(TASK, "train", "-r", first, f"data.train_file={without}", f"data.val_file={files['val']}", *TINY,
                "train.epochs=1") == 0
    old_classes = list(meta_of(first / "best.ckpt").classes)
    assert old_classes == [t for t in TAGS if "PRODUCT" not in t]

    task = get_task(TASK)
    overrides = [a for a in TINY if not a.startswith("model.pretrained")] + conll_args(files) + [
        f"model.pretrained={first / 'best.ckpt'}", "train.backbone_lr_scale=0.1"]
    spec = load_spec(task.spec_class, None, overrides)
    module, report = task.build_training_module(spec, task.build_data(spec))
    rates = {g["name"]: g["lr"] for g in module._optimizer_groups()}
    assert rates == {"backbone": pytest.approx(1e-3), "head": pytest.approx(1e-2)}  # the encoder learns slower
    old = torch.load(first / "best.ckpt", weights_only=True)["state_dict"]
    new = module.net.model.classifier
    for j, tag in enumerate(TAGS):
        if tag in old_classes:
            i = old_classes.index(tag)
            assert torch.equal(new.weight[j], old["net.model.classifier.weight"][i])
            assert torch.equal(new.bias[j], old["net.model.classifier.bias"][i])
        else:
            assert not any(torch.equal(new.weight[j], row) for row in old["net.model.classifier.weight"])
    assert report.labels == {"kept": [t for t in TAGS if "PRODUCT" not in t], "new": ["B-PRODUCT", "I-PRODUCT"],
                             "dropped": []}

    assert tkit(TASK, "train", "-r", tmp_path / "more", *overrides, "train.epochs=1") == 0
    written = json.loads((tmp_path / "more" / "load_report.json").read_text())
    assert written["labels"]["new"] == ["B-PRODUCT", "I-PRODUCT"] and len(written["labels"]["kept"]) == 7
    assert set(written["partially_loaded"]) == {"model.classifier.weight", "model.classifier.bias"}
    assert meta_of(tmp_path / "more" / "best.ckpt").classes == TAGS


def test_tok_prune_then_retrain(trained, files, tmp_path):
    assert tkit(TASK, "prune", "-r", tmp_path / "prune", "-m", trained / "best.ckpt", "prune.head_ratio=0.5",
                "prune.ffn_ratio=0.5") == 0
    report = json.loads((tmp_path / "prune" / "prune_report.json").read_text())
    assert report["params_after"] < report["params_before"]
    pruned = tmp_path / "prune" / "pruned.ckpt"
    assert tkit(TASK, "train", "-r", tmp_path / "retrain", *conll_args(files), *TINY, f"model.pruned={pruned}",
                "train.epochs=2") == 0
    meta = meta_of(tmp_path / "retrain" / "best.ckpt")
    assert meta.pruned_shapes and meta.classes == TAGS
    assert tkit(TASK, "evaluate", "-r", tmp_path / "eval", "-m", tmp_path / "retrain" / "best.ckpt",
                *conll_args(files)) == 0
    assert 0 <= json.loads((tmp_path / "eval" / "metrics.json").read_text())["f1"] <= 1


def test_tok_dataset_convert_round_trips_conll_nemo_and_schemes(files, tmp_path):
    assert tkit(TASK, "dataset_convert", "-r", tmp_path / "to_nemo", *conll_args(files),
                "dataset_convert.output_format=nemo", "dataset_convert.output_scheme=bioes") == 0
    nemo = tmp_path / "to_nemo" / "converted"
    tags = (nemo / "labels_train.txt").read_text()
    assert "S-" in tags and "E-" in tags and "B-" in tags
    report = json.loads((tmp_path / "to_nemo" / "dataset_convert.json").read_text())
    assert report["train"]["sentences"] == 24 and report["train"]["tag_scheme_read"] == "iob2"

    # BIOES NeMo files back to IOB2 CoNLL: the original sentences, word for word and tag for tag
    assert tkit(TASK, "dataset_convert", "-r", tmp_path / "back", f"data.train_file={nemo / 'text_train.txt'}",
                f"data.train_labels={nemo / 'labels_train.txt'}", f"data.val_file={nemo / 'text_val.txt'}",
                f"data.val_labels={nemo / 'labels_val.txt'}") == 0
    back = tmp_path / "back" / "converted"
    report = json.loads((tmp_path / "back" / "dataset_convert.json").read_text())
    assert report["train"]["tag_scheme_read"] == "bioes" and report["output_scheme"] == "iob2"
    for split in ("train", "val"):
        assert read_conll_blocks(back / f"{split}.txt") == read_conll_blocks(files[split])

    # a sentence the scheme forbids is reported with its place, not copied
    broken = tmp_path / "broken.txt"
    broken.write_text("Ada S-PER\nLovelace E-PER\n\nParis S-LOC\n")
    assert tkit(TASK, "dataset_convert", "-r", tmp_path / "broken", f"data.train_file={broken}",
                "data.tag_scheme=bioes") == 0
    report = json.loads((tmp_path / "broken" / "dataset_convert.json").read_text())
    assert report["train"]["sentences"] == 1 and list(report["train"]["skipped"]["files"]) == [f"{broken}:2"]
    assert (tmp_path / "broken" / "converted" / "train.txt").read_text() == "Paris B-LOC\n\n"


def test_tok_user_mistakes_are_one_line_errors(trained, files, tmp_path, capsys):
    only_o = tmp_path / "types.txt"
    only_o.write_text("O\n")
    cases = [
        (["train", "-r", tmp_path / "a"], "data.train_file is not set"),
        (["train", "-r", tmp_path / "b", f"data.train_file={tmp_path / 'nope.txt'}"], "nope.txt does not exist"),
        (["train", "-r", tmp_path / "c", f"data.train_file={files['text_train']}", "data.format=nemo"],
         "data.train_labels"),
        (["train", "-r", tmp_path / "d", *conll_args(files), f"data.train_labels={files['labels_train']}",
          "data.format=conll"], "data.train_labels"),
        (["train", "-r", tmp_path / "e", *conll_args(files), f"data.labels_file={only_o}"], "names no entity type"),
        (["train", "-r", tmp_path / "f", *conll_args(files), "model.max_length=1000"], "model.max_length"),
        (["inference", "-r", tmp_path / "g", "-m", trained / "best.ckpt"], "inference.file is not set"),
        (["evaluate", "-r", tmp_path / "h", "-m", trained / "best.ckpt"], "data.val_file"),
        (["export", "-r", tmp_path / "k", "-m", trained / "best.ckpt", "export.int8=true"], "data.val_file"),
        (["train", "-r", tmp_path / "i", *conll_args(files), "data.tag_scheme=bilou"], "data.tag_scheme"),
        (["train", "-r", tmp_path / "j", f"data.train_file={files['text_train']}",
          f"data.train_labels={files['labels_train']}", f"data.val_labels={files['labels_val']}"], "data.val_file"),
    ]
    assert_one_line_errors(TASK, cases, capsys)
