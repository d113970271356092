"""Preemption: SIGTERM (Kubernetes, SLURM, cloud schedulers) and SLURM's USR1 requeue convention.

A real `tkit classification train` subprocess is paused at a fixed batch (crash_helpers.PAUSED_TRAIN),
signalled, and resumed; the resumed run must end where an uninterrupted run ends, to the tolerance
of the SIGKILL crash-resume test. Data: the 3-class digits fixture (12 training images, batch 4 =
3 steps per epoch), 32x32 pixels, two epochs.
"""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.register_assert_rewrite("crash_helpers")
from crash_helpers import (  # noqa: E402
    child_env, err_path, kill_group, output, start_paused_train, status_lines, tkit_cmd, wait_for,
)

from transferkit.engine.run import LOCK_NAME  # noqa: E402

STEPS = 3  # per epoch
EPOCHS = 2
SETTINGS = [
    "model.pretrained=false", "model.backbone=mobilenet_v2", "data.image_size=32", "train.batch_size=4",
    "train.num_workers=0", "train.histograms=false", f"train.epochs={EPOCHS}", "train.deterministic=true",
    "train.seed=1", "train.learning_rate=0.02",
]
TOL = 1e-5


def train_argv(digits: Path, results: Path, *extra: str) -> list[str]:
    return ["classification", "train", "-r", str(results), f"data.train_dir={digits / 'train'}",
            f"data.val_dir={digits / 'val'}", *SETTINGS, *extra]


def run_tkit(argv: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, str]:
    proc = subprocess.run(tkit_cmd(*argv), capture_output=True, text=True, env={**child_env(), **(env or {})},
                          timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def load_safely(path: Path) -> dict:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert isinstance(ckpt, dict) and "state_dict" in ckpt, sorted(ckpt)
    return ckpt


@pytest.fixture(scope="module")
def reference(digits, tmp_path_factory):
    """An uninterrupted run, started once for the module and trained alongside the tests' own runs."""
    results = tmp_path_factory.mktemp("reference") / "run"
    proc = subprocess.Popen(tkit_cmd(*train_argv(digits, results)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=child_env(), start_new_session=True)
    done: dict[str, Path] = {}

    def finished() -> Path:
        if not done:
            out, _ = proc.communicate(timeout=180)
            assert proc.returncode == 0, out[-3000:]
            done["results"] = results
        return done["results"]

    try:
        yield finished
    finally:
        kill_group(proc)
        proc.wait(timeout=30)


def assert_same_run(got: Path, want: Path, split_epoch: int) -> None:
    """`got` (interrupted in epoch `split_epoch` and resumed) ends where `want` (uninterrupted) ends: every
    epoch's losses and metrics, the final metrics and the final weights.

    One number is not compared: the mean training loss of the epoch that was split. Lightning does not
    keep its running means in a checkpoint, so after a resume that mean covers only the batches run
    after it (every batch's loss is the same, as the weights show)."""
    a_lines, b_lines = status_lines(got), status_lines(want)
    assert [r["epoch"] for r in a_lines] == [r["epoch"] for r in b_lines] == list(range(EPOCHS))
    assert [r["step"] for r in a_lines] == [r["step"] for r in b_lines] == [STEPS * (e + 1) for e in range(EPOCHS)]
    for a, b in zip(a_lines, b_lines):
        for key in ("train/loss", "val/loss", "val/acc", "lr"):
            if key == "train/loss" and a["epoch"] == split_epoch:
                continue
            assert a[key] == pytest.approx(b[key], abs=TOL), f"epoch {a['epoch']} {key}: resumed {a[key]} vs {b[key]}"
    m_got = json.loads((got / "metrics.json").read_text())
    m_want = json.loads((want / "metrics.json").read_text())
    assert m_got["epochs_completed"] == m_want["epochs_completed"] == EPOCHS
    assert m_got["best"]["val/acc"] == pytest.approx(m_want["best"]["val/acc"], abs=TOL)
    for key in ("val/loss", "val/acc"):
        assert m_got["final"][key] == pytest.approx(m_want["final"][key], abs=TOL), key
    w_got = load_safely(got / "last.ckpt")["state_dict"]
    w_want = load_safely(want / "last.ckpt")["state_dict"]
    assert w_got.keys() == w_want.keys()
    worst = max((w_got[k].double() - w_want[k].double()).abs().max().item() for k in w_got)
    assert worst <= TOL, f"final weights differ by up to {worst}"


def stop_with(proc: subprocess.Popen, sig: int, log: Path) -> tuple[int, str]:
    kill_group(proc, sig)
    try:
        rc = proc.wait(timeout=60)
    finally:
        kill_group(proc)
    return rc, err_path(log).read_text()


# -- SIGTERM in the first epoch, before any checkpoint exists ----------------------------------------

def test_sigterm_mid_first_epoch_saves_checkpoint_exits_143_and_resumes_exactly(digits, tmp_path, reference):
    results, marker, log = tmp_path / "run", tmp_path / "paused.json", tmp_path / "run.log"
    proc = start_paused_train(marker, 0, 1, train_argv(digits, results), log)
    try:
        assert json.loads(wait_for(proc, marker, log)) == {"epoch": 0, "batch": 1, "step": 1}
        assert not (results / "last.ckpt").exists()  # nothing saved yet: the signal must save it
        rc, err = stop_with(proc, signal.SIGTERM, log)
    finally:
        kill_group(proc)
    assert rc == 143, output(log)  # 128 + SIGTERM, as a shell reports it; Ctrl-C stays 130
    assert "SIGTERM" in err and "train.resume=true" in err and str(results) in err, err
    assert "Traceback" not in err, err
    ckpt = load_safely(results / "last.ckpt")
    # Lightning finishes the batch in progress, then stops: the checkpoint holds whole batches
    assert ckpt["global_step"] == 2 and ckpt["epoch"] == 0 and "transferkit" in ckpt
    assert status_lines(results) == [] and not (results / "metrics.json").exists()  # as after Ctrl-C
    assert not (results / LOCK_NAME).exists()

    rc, out = run_tkit(train_argv(digits, results, "train.resume=true"))
    assert rc == 0, out[-3000:]
    assert "resuming from a checkpoint that ended before the epoch ended" not in out  # Lightning's warning
    assert_same_run(results, reference(), split_epoch=0)


# -- SLURM: --signal=USR1@90 and --requeue, through Lightning's SLURM environment ----------------------

FAKE_SCONTROL = """#!/bin/sh
echo "$@" >> "{log}"
"""


def test_slurm_usr1_requeue_then_sigterm_and_the_requeued_job_resumes_on_its_own(digits, tmp_path, reference):
    """USR1 (the requeue signal) makes Lightning save hpc_ckpt_1.ckpt and run `scontrol requeue JOB`;
    the SIGTERM SLURM then sends saves last.ckpt and exits 143; the requeued job runs the same command
    line (no train.resume) with SLURM_RESTART_COUNT=1 and continues from the newer checkpoint."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol.log"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(FAKE_SCONTROL.format(log=calls))
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IXUSR)
    slurm = {"SLURM_NTASKS": "1", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "tkit-train", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    results, marker, log = tmp_path / "run", tmp_path / "paused.json", tmp_path / "run.log"
    argv = train_argv(digits, results)
    proc = start_paused_train(marker, 1, 1, argv, log, env=slurm)
    try:
        assert json.loads(wait_for(proc, marker, log))["step"] == STEPS + 1
        kill_group(proc, signal.SIGUSR1)
        assert wait_for(proc, calls, log).split() == ["requeue", "4242"]
        assert (results / "hpc_ckpt_1.ckpt").is_file()
        rc, err = stop_with(proc, signal.SIGTERM, log)  # what `scontrol requeue` does to the running job
    finally:
        kill_group(proc)
    assert rc == 143, output(log)
    assert load_safely(results / "last.ckpt")["global_step"] == STEPS + 2

    rc, out = run_tkit(argv, env={**slurm, "SLURM_RESTART_COUNT": "1"})
    assert rc == 0, out[-3000:]
    assert "requeued" in out and "last.ckpt" in out, out[-3000:]
    assert not list(results.glob("hpc_ckpt_*.ckpt"))  # served their purpose once the run finished
    assert_same_run(results, reference(), split_epoch=1)


# -- SIGTERM before training starts ----------------------------------------------------------------------

TERM_DURING_SCAN = r"""
import os, signal, sys
from transferkit.data import module
scan = module.TaskData.scan
def scan_then_terminate(self, split):
    os.kill(os.getpid(), signal.SIGTERM)  # while the data is checked, before Lightning handles the signal
    return scan(self, split)
module.TaskData.scan = scan_then_terminate
from transferkit.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_before_training_exits_143_and_releases_the_results_folder(digits, tmp_path):
    results = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", TERM_DURING_SCAN, *train_argv(digits, results)], capture_output=True,
                          text=True, env=child_env(), timeout=120)
    assert done.returncode == 143, done.stderr[-3000:]
    assert "tkit: terminated (SIGTERM)" in done.stderr and "Traceback" not in done.stderr
    assert not (results / LOCK_NAME).exists()  # a later run in this folder starts without a stale lock
