"""prune -> retrain -> export (FP32 + INT8) -> evaluate/inference on ONNX, and BYOM, through the CLI."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from transferkit.cli import main
from transferkit.engine.meta import tensor_input
from transferkit.optimize import OnnxModel

FAST = ["data.image_size=32", "train.batch_size=8", "train.num_workers=0", "train.epochs=1",
        "train.histograms=false", "evaluation.batch_size=16"]


def tkit(*args) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("opt") / "cls"
    assert tkit("classification", "train", "-r", run, *data, *FAST) == 0
    return run / "best.ckpt"


@pytest.fixture(scope="module")
def pruned(trained, data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("opt") / "prune"
    assert tkit("classification", "prune", "-r", out, "-m", trained, *data, *FAST, "prune.ratio=0.5") == 0
    return out


def test_prune_report_and_weights_only_checkpoint(pruned):
    report = json.loads((pruned / "prune_report.json").read_text())
    for key in ("params_before", "params_after", "macs_before", "macs_after", "latency_ms_before", "latency_ms_after"):
        assert report[key] > 0, key
    assert report["params_after"] < report["params_before"] / 2
    assert report["macs_after"] < report["macs_before"]
    changed = [r for r in report["layers"] if r["kept"] < r["total"]]
    assert changed and all(r["kept"] % 8 == 0 and r["kept"] >= 16 for r in changed)
    ckpt = torch.load(pruned / "pruned.ckpt", weights_only=True)
    assert ckpt["transferkit"]["pruned_shapes"]


@pytest.mark.export
def test_retrain_pruned_then_export_and_run_onnx_like_pytorch(pruned, data, digits, tmp_path):
    retrain = tmp_path / "retrain"
    assert tkit("classification", "train", "-r", retrain, *data, *FAST, f"model.pruned={pruned / 'pruned.ckpt'}") == 0
    ckpt = torch.load(retrain / "best.ckpt", weights_only=True)
    assert ckpt["transferkit"]["pruned_shapes"] == torch.load(pruned / "pruned.ckpt", weights_only=True)["transferkit"]["pruned_shapes"]

    export = tmp_path / "export"
    assert tkit("classification", "export", "-r", export, "-m", retrain / "best.ckpt", *data, *FAST,
                "export.int8=true", "export.calibration_images=16") == 0
    report = json.loads((export / "export_report.json").read_text())
    assert report["parity"]["ok"] and report["parity"]["max_abs_diff"] < 1e-3
    assert set(report["runtimes"]) == {"pytorch", "onnx_fp32", "onnx_int8"}
    assert report["runtimes"]["onnx_fp32"]["top1"] == pytest.approx(report["runtimes"]["pytorch"]["top1"])
    int8 = report["runtimes"]["onnx_int8"]
    assert 0 <= int8["top1"] <= 1 and int8["file_bytes"] < report["runtimes"]["onnx_fp32"]["file_bytes"]
    model = OnnxModel(export / "model.onnx")
    meta = json.loads(model.metadata["transferkit"])
    assert meta["classes"] == [str(i) for i in range(10)] and json.loads(model.metadata["input_size"]) == [3, 32, 32]
    assert model.input_shape[0] is None  # dynamic batch
    assert (export / "model.safetensors").stat().st_size > 0

    # evaluate and inference accept the .onnx and give the same numbers and files as the checkpoint
    results = {}
    for name, model_path in (("ckpt", retrain / "best.ckpt"), ("onnx", export / "model.onnx")):
        ev, inf = tmp_path / f"eval_{name}", tmp_path / f"inf_{name}"
        assert tkit("classification", "evaluate", "-r", ev, "-m", model_path, *data, *FAST) == 0
        assert tkit("classification", "inference", "-r", inf, "-m", model_path, *data, *FAST,
                    f"inference.images={digits / 'val'}") == 0
        results[name] = (json.loads((ev / "metrics.json").read_text()),
                         list(csv.DictReader((inf / "predictions.csv").open())))
    (m_ckpt, p_ckpt), (m_onnx, p_onnx) = results["ckpt"], results["onnx"]
    assert m_onnx["top1"] == pytest.approx(m_ckpt["top1"])
    assert m_onnx["confusion_matrix"] == m_ckpt["confusion_matrix"]
    assert [r["label1"] for r in p_onnx] == [r["label1"] for r in p_ckpt]
    assert all(abs(float(a["score1"]) - float(b["score1"])) < 1e-3 for a, b in zip(p_onnx, p_ckpt))


def test_bring_your_own_onnx_imports_and_fine_tunes(data, tmp_path, capsys):
    """Export the real offline ImageNet MobileNetV2 to ONNX, import it as a backbone, fine-tune it."""
    import torchvision

    from transferkit.optimize import export_onnx
    from transferkit.zoo import resolve_weights

    net = torchvision.models.mobilenet_v2()
    net.load_state_dict(torch.load(resolve_weights("mobilenet_v2"), weights_only=True))
    onnx_file = export_onnx(net.eval(), tmp_path / "mnv2.onnx", tensor_input((3, 64, 64)))
    assert tkit("model", "import-onnx", "my_mnv2", onnx_file) == 0
    assert "my_mnv2" in capsys.readouterr().out
    run = tmp_path / "byom"
    assert tkit("classification", "train", "-r", run, *data, *FAST, "data.image_size=64",
                "model.backbone=my_mnv2") == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 1
    report = json.loads((run / "load_report.json").read_text())
    assert report["counts"]["loaded"] > 100  # the imported ImageNet weights, now trainable parameters
