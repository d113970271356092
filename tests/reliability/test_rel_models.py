"""Bad files given as -m: another task's checkpoint, truncated or random files, broken or foreign
ONNX, and a checkpoint whose pickle would run code. Each is refused in one or two lines."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from rel_helpers import FAST


@pytest.fixture
def eval_args(digits):
    return [f"data.val_dir={digits / 'val'}", f"inference.images={digits / 'val'}", *FAST]


class _RunsCodeWhenUnpickled:
    """Unpickling this calls Path.touch(marker): proof that a loader executed pickled code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.fixture
def booby_trapped_checkpoint(trained, tmp_path):
    """A real checkpoint's contents plus one object whose unpickling creates `marker`."""
    marker = tmp_path / "code_ran.marker"
    ckpt = torch.load(trained / "best.ckpt", map_location="cpu", weights_only=True)
    ckpt["callbacks"] = {"innocent_looking": _RunsCodeWhenUnpickled(marker)}
    path = tmp_path / "trap.ckpt"
    torch.save(ckpt, path)
    assert not marker.exists()
    return path, marker


@pytest.mark.parametrize("verb", ["evaluate", "inference", "prune", "export"])
def test_checkpoint_from_another_task_is_refused_by_every_model_verb(trained, tmp_path, tkit, eval_args, verb):
    ckpt = torch.load(trained / "best.ckpt", map_location="cpu", weights_only=True)
    forged = tmp_path / "detector.ckpt"
    meta = {**ckpt["transferkit"], "task": "detectnet_v2"}
    torch.save({"transferkit": meta, "state_dict": ckpt["state_dict"]}, forged)
    result = tkit(verb, "-r", tmp_path / "out", "-m", forged, *eval_args)
    result.assert_user_error(str(forged), "detectnet_v2", "not classification")


def test_truncated_checkpoint_is_refused_as_truncated(trained, tmp_path, tkit, eval_args):
    data = (trained / "best.ckpt").read_bytes()
    cut = tmp_path / "half.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    result = tkit("evaluate", "-r", tmp_path / "out", "-m", cut, *eval_args)
    result.assert_user_error(str(cut), "truncated")


@pytest.mark.parametrize("seed", [0, 2, 20])  # torch raises UnpicklingError, IndexError, KeyError respectively
def test_random_bytes_checkpoint_is_refused_as_not_a_pytorch_file(tmp_path, tkit, eval_args, seed):
    junk = tmp_path / f"random_{seed}.ckpt"
    junk.write_bytes(random.Random(seed).randbytes(4096))
    message = tkit("evaluate", "-r", tmp_path / "out", "-m", junk, *eval_args).assert_user_error(str(junk))
    assert "not a PyTorch file" in message
    assert "run code" not in message


def test_missing_model_file_is_named(tmp_path, tkit, eval_args):
    missing = tmp_path / "best.ckpt"
    result = tkit("evaluate", "-r", tmp_path / "out", "-m", missing, *eval_args)
    result.assert_user_error(str(missing), "does not exist")


def test_malformed_onnx_is_refused(tmp_path, tkit, eval_args):
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"\x08\x07not really protobuf" + random.Random(1).randbytes(300))
    result = tkit("evaluate", "-r", tmp_path / "out", "-m", broken, *eval_args)
    result.assert_user_error(str(broken), "ONNX")


def test_onnx_from_another_exporter_is_refused_with_the_import_command(tmp_path, tkit, eval_args):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 3)).eval()
    foreign = tmp_path / "foreign.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated; it is the "other exporter" here
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(1, 3, 32, 32),), str(foreign), dynamo=False)
    result = tkit("evaluate", "-r", tmp_path / "out", "-m", foreign, *eval_args)
    result.assert_user_error(str(foreign), "transferkit metadata", "tkit model import-onnx")


def test_checkpoint_whose_pickle_runs_code_is_refused_and_the_code_never_runs(booby_trapped_checkpoint, tmp_path,
                                                                             tkit, eval_args):
    trap, marker = booby_trapped_checkpoint
    result = tkit("evaluate", "-r", tmp_path / "out", "-m", trap, *eval_args)
    result.assert_user_error(str(trap), "refused")
    assert not marker.exists()
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_refusal_of_a_code_running_checkpoint_is_plain_text(booby_trapped_checkpoint, tmp_path,
                                                                                tkit, eval_args):
    trap, _ = booby_trapped_checkpoint
    message = tkit("evaluate", "-r", tmp_path / "out", "-m", trap, *eval_args).assert_user_error(str(trap))
    assert "\x1b" not in message
    assert "can still be loaded" not in message  # torch's hint to bypass the check is not ours to give


def _tkit_subprocess(*argv) -> subprocess.CompletedProcess:
    tkit = Path(sys.executable).with_name("tkit")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(tkit), "classification", *map(str, argv)], capture_output=True, text=True,
                          env=env, timeout=180)


def test_subprocess_code_running_checkpoint_prints_no_traceback(booby_trapped_checkpoint, tmp_path, eval_args):
    trap, marker = booby_trapped_checkpoint
    proc = _tkit_subprocess("evaluate", "-r", tmp_path / "out", "-m", trap, *eval_args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("tkit: error: ")]
    assert len(errors) == 1 and str(trap) in errors[0]
    assert not marker.exists()


def test_subprocess_tab_indented_spec_prints_no_traceback(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("train:\n\tepochs: 3\n", encoding="utf-8")
    proc = _tkit_subprocess("train", "-e", spec, "-r", tmp_path / "run")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # exactly one line
    assert proc.stderr.startswith(f"tkit: error: {spec}:2:1") and "tabs" in proc.stderr
