"""A non-image task (int64 token ids, dynamic length) through the CLI verbs with no special case in the core."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from transferkit.engine.meta import ModelMeta
from transferkit.optimize import OnnxModel
from transferkit.tasks import _registered, register_task

import seq_task
from cli_helpers import run_cli as tkit


@pytest.fixture(scope="module", autouse=True)
def registered():
    register_task(seq_task.TASK)
    yield
    _registered.pop(seq_task.NAME, None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("seq") / "train"
    assert tkit(seq_task.NAME, "train", "-r", run, "train.epochs=10") == 0
    return run


def test_training_reports_sequences_and_learns(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["task"] == seq_task.NAME
    assert metrics["train_sequences"] == 192 and metrics["val_sequences"] == 48
    assert metrics["skipped_sequences"] == {"count": 0, "files": {}}
    assert metrics["best"]["val/acc"] > 0.8  # chance is 1/3
    raw = torch.load(trained / "best.ckpt", weights_only=True)["transferkit"]
    meta = ModelMeta.from_dict(raw)
    assert [(i.name, i.dtype, i.shape) for i in meta.inputs] == [("tokens", "int64", ("batch", "length"))]


@pytest.mark.export
def test_evaluate_prune_retrain_export_and_evaluate_the_onnx(trained, tmp_path):
    assert tkit(seq_task.NAME, "evaluate", "-r", tmp_path / "eval", "-m", trained / "best.ckpt") == 0
    eager = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert eager["num_sequences"] == 48 and eager["model"]["runtime"] == "pytorch"

    assert tkit(seq_task.NAME, "prune", "-r", tmp_path / "prune", "-m", trained / "best.ckpt",
                "prune.threshold=null", "prune.ratio=0.5", "prune.min_num_filters=8") == 0
    report = json.loads((tmp_path / "prune" / "prune_report.json").read_text())
    assert report["params_after"] < report["params_before"]
    assert any(row["kept"] < row["total"] for row in report["layers"])

    assert tkit(seq_task.NAME, "train", "-r", tmp_path / "retrain", "train.epochs=6",
                f"model.pruned={tmp_path / 'prune' / 'pruned.ckpt'}") == 0
    retrained = tmp_path / "retrain" / "best.ckpt"
    assert ModelMeta.from_dict(torch.load(retrained, weights_only=True)["transferkit"]).pruned_shapes

    assert tkit(seq_task.NAME, "export", "-r", tmp_path / "export", "-m", retrained, "export.int8=true") == 0
    export = json.loads((tmp_path / "export" / "export_report.json").read_text())
    assert export["parity"]["ok"] and set(export["runtimes"]) == {"pytorch", "onnx_fp32", "onnx_int8"}
    graph_input = onnx.load(tmp_path / "export" / "model.onnx").graph.input[0]
    assert graph_input.name == "tokens"
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [d.dim_param for d in graph_input.type.tensor_type.shape.dim] == ["batch", "length"]

    assert tkit(seq_task.NAME, "evaluate", "-r", tmp_path / "eval_onnx", "-m", tmp_path / "export" / "model.onnx") == 0
    via_onnx = json.loads((tmp_path / "eval_onnx" / "metrics.json").read_text())
    assert via_onnx["model"]["runtime"] == "onnx"
    assert via_onnx["accuracy"] == pytest.approx(export["runtimes"]["pytorch"]["accuracy"], abs=1 / 48)
    assert via_onnx["accuracy"] > 0.8
    assert tkit(seq_task.NAME, "evaluate", "-r", tmp_path / "eval_int8", "-m",
                tmp_path / "export" / "model_int8.onnx") == 0
    assert json.loads((tmp_path / "eval_int8" / "metrics.json").read_text())["accuracy"] > 0.7


@pytest.mark.export
def test_exported_graph_takes_lengths_it_was_not_traced_with(trained, tmp_path):
    assert tkit(seq_task.NAME, "export", "-r", tmp_path / "export", "-m", trained / "best.ckpt") == 0
    model = OnnxModel(tmp_path / "export" / "model.onnx")
    net = seq_task.TASK.load_net(*_checkpoint(trained / "best.ckpt"), trained / "best.ckpt").eval()
    for length in (3, 29):
        tokens = torch.randint(0, 12, (5, length), generator=torch.Generator().manual_seed(length))
        (logits,) = model(tokens.numpy())  # int64 stays int64: the graph refuses floats for token ids
        with torch.inference_mode():
            expected = net(tokens).numpy()
        np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)


def _checkpoint(path):
    from transferkit.engine.checkpoint import read_checkpoint

    return read_checkpoint(path, task=seq_task.NAME)
