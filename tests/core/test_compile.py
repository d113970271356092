"""train.compile: the network trains compiled, and what it leaves behind is the plain network's."""
from __future__ import annotations

import shutil

import pytest
import torch
import torch._dynamo

from transferkit.cli import main
from transferkit.io import safe_torch_load


def tkit(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["classification", *map(str, argv)])
    return rc, capsys.readouterr().err


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from transferkit.data.demo import build_demo

    root = tmp_path_factory.mktemp("digits")
    build_demo("digits", root, per_class=3, val_per_class=1, size=24)
    return root


def args(digits, run, *extra):
    return ["train", "-r", run, f"data.train_dir={digits / 'train'}", f"data.val_dir={digits / 'val'}",
            "data.image_size=32", "model.pretrained=false", "model.backbone=mobilenet_v2", "train.epochs=1",
            "train.batch_size=8", "train.num_workers=0", "train.histograms=false", *extra]


@pytest.mark.slow
def test_training_runs_the_compiled_network_and_saves_the_plain_one(digits, tmp_path, capsys):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    # The eager backend: dynamo captures the graph (what compile changes in a run) without generating kernels.
    rc, err = tkit(capsys, *args(digits, tmp_path / "run", "train.compile=true", "train.compile_backend=eager"))
    assert rc == 0, err
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the forward was captured and compiled
    assert "train.compile=true (eager" in (tmp_path / "run" / "log.txt").read_text()
    state = safe_torch_load(tmp_path / "run" / "best.ckpt")["state_dict"]
    assert state and not any("_orig_mod" in key for key in state)
    rc, err = tkit(capsys, "evaluate", "-r", tmp_path / "eval", "-m", tmp_path / "run" / "best.ckpt",
                   f"data.val_dir={digits / 'val'}", "data.image_size=32")
    assert rc == 0, err


def test_an_unknown_backend_is_refused_before_training(digits, tmp_path, capsys):
    rc, err = tkit(capsys, *args(digits, tmp_path / "run", "train.compile=true", "train.compile_backend=tensorrtt"))
    assert rc == 2 and "train.compile_backend" in err and "inductor" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "best.ckpt").exists()


def test_inductor_on_a_cpu_without_a_cpp_compiler_says_how_to_get_one(digits, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    rc, err = tkit(capsys, *args(digits, tmp_path / "run", "train.compile=true", "train.accelerator=cpu"))
    assert rc == 2 and "C++ compiler" in err and "train.compile=false" in err
