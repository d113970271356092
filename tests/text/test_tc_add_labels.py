"""Adding labels to a trained text classifier: training from its checkpoint with another label list keeps the head
rows of the labels both lists share (matched by name, whatever their order), starts new labels fresh, keeps the
whole encoder, and load_report.json says which."""
from __future__ import annotations

import json

import pytest
import torch

from transferkit.cli import main
from transferkit.engine.checkpoint import read_checkpoint
from transferkit.spec import load_spec
from transferkit.tasks import get_task

from text_helpers import TINY
from text_tickets import tickets, write_tsv

TASK = "text_classification"


@pytest.fixture(scope="module")
def old_run(ticket_files, tmp_path_factory):
    run = tmp_path_factory.mktemp("old") / "train"
    assert main([TASK, "train", "-r", str(run), f"data.train_file={ticket_files['train']}",
                 f"data.val_file={ticket_files['val']}", *TINY, "train.epochs=2"]) == 0
    return run


@pytest.fixture(scope="module")
def new_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("new")
    rows = [(t, y) for t, y in tickets(24, seed=5) if y != "shipping"]
    rows += [(f"I want my money back for the {thing}", "refund") for thing in ("phone", "lamp", "chair", "desk")]
    return write_tsv(root / "train.tsv", rows), write_tsv(root / "val.tsv", rows)


def test_shared_labels_keep_their_rows_and_new_ones_start_fresh(old_run, new_files):
    task = get_task(TASK)
    train, val = new_files
    spec = load_spec(task.spec_class, None, [f"data.train_file={train}", f"data.val_file={val}", *TINY,
                                             f"model.pretrained={old_run / 'best.ckpt'}",
                                             "data.labels=[technical, refund, billing]"])
    data = task.build_data(spec)
    module, report = task.build_training_module(spec, data)
    old_meta, old_state = read_checkpoint(old_run / "best.ckpt", task=TASK)
    assert old_meta.classes == ("billing", "shipping", "technical")
    name, layer = module.net.output_layer()
    assert name == "model.classifier"
    old_w, old_b = old_state[f"net.{name}.weight"], old_state[f"net.{name}.bias"]
    assert torch.equal(layer.weight[0], old_w[2]) and torch.equal(layer.bias[0], old_b[2])  # technical
    assert torch.equal(layer.weight[2], old_w[0]) and torch.equal(layer.bias[2], old_b[0])  # billing
    assert not any(torch.allclose(layer.weight[1], row) for row in old_w)  # refund: fresh
    state = module.net.state_dict()
    encoder = [k for k in state if not k.startswith(name)]
    assert encoder and all(torch.equal(state[k], old_state[f"net.{k}"]) for k in encoder)
    assert report.as_dict()["labels"] == {"kept": ["technical", "billing"], "new": ["refund"], "dropped": ["shipping"]}
    assert f"{name}.weight" in report.partially_loaded and "2 of 3 rows" in report.partially_loaded[f"{name}.weight"]
    assert module.meta.classes == ("technical", "refund", "billing")


def test_the_cli_writes_which_labels_were_kept(old_run, new_files, tmp_path):
    train, val = new_files
    assert main([TASK, "train", "-r", str(tmp_path / "more"), f"data.train_file={train}", f"data.val_file={val}",
                 *TINY, "train.epochs=1", f"model.pretrained={old_run / 'best.ckpt'}"]) == 0
    report = json.loads((tmp_path / "more" / "load_report.json").read_text())
    assert report["labels"] == {"kept": ["billing", "technical"], "new": ["refund"], "dropped": ["shipping"]}
    assert report["source"] == str(old_run / "best.ckpt") and report["counts"]["partially_loaded"] == 2
    meta, _ = read_checkpoint(tmp_path / "more" / "best.ckpt", task=TASK)
    assert meta.classes == ("billing", "refund", "technical") and meta.backbone == "minilm-l6"
