"""`tkit text_classification prune` goes through TextTask.prune_net (text.prune: attention heads and FFN neurons);
the pruned model retrains, exports and evaluates like any other."""
from __future__ import annotations

import json

import pytest

from transferkit.cli import main
from transferkit.engine.checkpoint import read_checkpoint

from text_helpers import TINY

TASK = "text_classification"


@pytest.fixture(scope="module")
def trained(ticket_files, tmp_path_factory):
    run = tmp_path_factory.mktemp("prune") / "train"
    tiny = [a for a in TINY if not a.startswith("model.config_overrides")]
    assert main([TASK, "train", "-r", str(run), f"data.train_file={ticket_files['train']}",
                 f"data.val_file={ticket_files['val']}", *tiny, "train.epochs=1",
                 "model.config_overrides={num_hidden_layers: 2, hidden_size: 64, num_attention_heads: 4, "
                 "intermediate_size: 128}"]) == 0
    return run


@pytest.mark.export
def test_prune_retrain_export_and_evaluate_the_onnx(trained, ticket_files, tmp_path):
    data = [f"data.train_file={ticket_files['train']}", f"data.val_file={ticket_files['val']}"]
    assert main([TASK, "prune", "-r", str(tmp_path / "prune"), "-m", str(trained / "best.ckpt"), *data,
                 "prune.evaluate=true"]) == 0
    report = json.loads((tmp_path / "prune" / "prune_report.json").read_text())
    assert report["params_after"] < report["params_before"]
    # prune.evaluate scores the pruned model on the val sentences; there is no BatchNorm to re-estimate
    assert 0.0 <= report["val_after_prune"]["accuracy"] <= 1.0
    assert report["bn_recalibration"] == {"done": False, "reason": "the network has no BatchNorm layers"}
    pruned = tmp_path / "prune" / "pruned.ckpt"
    meta, _ = read_checkpoint(pruned, task=TASK)
    assert meta.pruned_shapes and meta.arch["tokenizer_json"]

    assert main([TASK, "train", "-r", str(tmp_path / "retrain"), *data, *TINY, "train.epochs=2",
                 f"model.pruned={pruned}"]) == 0
    retrained = tmp_path / "retrain" / "best.ckpt"
    assert read_checkpoint(retrained, task=TASK)[0].pruned_shapes == meta.pruned_shapes
    assert main([TASK, "export", "-r", str(tmp_path / "export"), "-m", str(retrained), *data]) == 0
    assert json.loads((tmp_path / "export" / "export_report.json").read_text())["parity"]["ok"]
    assert main([TASK, "evaluate", "-r", str(tmp_path / "eval"), "-m", str(tmp_path / "export" / "model.onnx"),
                 *data]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["num_sentences"] == 24
