"""Crash and resume, Ctrl-C, atomic checkpoint writes and the results-folder lock.

Training runs in real subprocesses (the same `transferkit.cli.main` the `tkit` script runs), each
in its own process group, and is stopped at a fixed training step by a test-only pause callback
(crash_helpers.PAUSED_TRAIN), so the crash point is the same on every machine however slow.
Data: the 3-class digits fixture (12 training images, batch 4 = 3 steps per epoch), 32x32 pixels.
"""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.register_assert_rewrite("crash_helpers")
from crash_helpers import (  # noqa: E402
    child_env, err_path, kill_group, output, start_paused_train, start_save_server, status_lines, tkit_cmd, wait_for,
)

from transferkit.engine.run import LOCK_NAME  # noqa: E402

STEPS = 3  # per epoch
SETTINGS = [
    "model.pretrained=false", "model.backbone=mobilenet_v2", "data.image_size=32", "train.batch_size=4",
    "train.num_workers=0", "train.histograms=false", "train.epochs=3", "train.deterministic=true", "train.seed=1",
    "train.learning_rate=0.02",
]
TOL = 1e-5


def train_argv(digits: Path, results: Path, *extra: str) -> list[str]:
    return ["classification", "train", "-r", str(results), f"data.train_dir={digits / 'train'}",
            f"data.val_dir={digits / 'val'}", *SETTINGS, *extra]


def start_tkit(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(tkit_cmd(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(), start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 100) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
    return proc.returncode, out, err


def load_safely(path: Path) -> dict:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert isinstance(ckpt, dict) and "state_dict" in ckpt, sorted(ckpt)
    return ckpt


def pause(marker: Path, proc, log: Path) -> dict:
    return json.loads(wait_for(proc, marker, log))


# -- 1. SIGKILL mid-epoch, then train.resume=true --------------------------------------------------

def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(digits, tmp_path, paused_run):
    crashed, reference = tmp_path / "crashed", tmp_path / "reference"
    marker, log = tmp_path / "paused.json", tmp_path / "crashed.log"
    proc = start_paused_train(marker, 2, 1, train_argv(digits, crashed), log)
    full = start_tkit(train_argv(digits, reference))  # the uninterrupted run, alongside
    try:
        at = pause(marker, proc, log)
        # the crash point: second batch of the last epoch; epochs 0 and 1 finished and checkpointed
        assert at == {"epoch": 2, "batch": 1, "step": 2 * STEPS + 1}
        assert [r["epoch"] for r in status_lines(crashed)] == [0, 1]
        kill_group(proc, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    except BaseException:
        kill_group(full)
        raise
    finally:
        kill_group(proc)
    # last.ckpt is rewritten after every epoch, whether or not val/acc improved
    assert load_safely(crashed / "last.ckpt")["global_step"] == 2 * STEPS
    assert (crashed / LOCK_NAME).is_file()  # SIGKILL leaves the lock; resume must see that it is stale

    rc, out, err = finish(start_tkit(train_argv(digits, crashed, "train.resume=true")))
    assert rc == 0, err[-3000:]
    assert "stale lock" in out + err
    rc, _, err = finish(full)
    assert rc == 0, err[-3000:]

    got, want = status_lines(crashed), status_lines(reference)
    assert [r["epoch"] for r in got] == [0, 1, 2] == [r["epoch"] for r in want]
    assert [r["step"] for r in got] == [r["step"] for r in want] == [STEPS, 2 * STEPS, 3 * STEPS]
    for a, b in zip(got, want):
        for key in ("train/loss", "val/loss", "val/acc", "lr"):
            assert a[key] == pytest.approx(b[key], abs=TOL), f"epoch {a['epoch']} {key}: resumed {a[key]} vs {b[key]}"
    m_got = json.loads((crashed / "metrics.json").read_text())
    m_want = json.loads((reference / "metrics.json").read_text())
    assert m_got["epochs_completed"] == m_want["epochs_completed"] == 3
    assert m_got["best"]["val/acc"] == pytest.approx(m_want["best"]["val/acc"], abs=TOL)
    for key in ("val/loss", "val/acc"):
        assert m_got["final"][key] == pytest.approx(m_want["final"][key], abs=TOL), key
    w_got = load_safely(crashed / "last.ckpt")["state_dict"]
    w_want = load_safely(reference / "last.ckpt")["state_dict"]
    assert w_got.keys() == w_want.keys()
    worst = max((w_got[k].double() - w_want[k].double()).abs().max().item() for k in w_got)
    assert worst <= TOL, f"final weights differ by up to {worst}"
    assert not (crashed / LOCK_NAME).exists()


# -- 2. the results-folder lock, and 3. Ctrl-C: one run paused mid-epoch serves both ----------------

@pytest.fixture(scope="module")
def paused_run(digits, tmp_path_factory):
    """A training run that pauses before batch 1 of epoch 1 (epoch 0 done): (process, results, log, marker).

    Only started here; the tests wait for the pause. Test 1 asks for it too, so that it trains
    while test 1's own runs do (each run uses one core; CI machines have two)."""
    root = tmp_path_factory.mktemp("paused")
    results, marker, log = root / "run", root / "paused.json", root / "run.log"
    proc = start_paused_train(marker, 1, 1, train_argv(digits, results), log)
    try:
        yield proc, results, log, marker
    finally:
        kill_group(proc)
        proc.wait(timeout=30)


def paused(run) -> tuple[subprocess.Popen, Path, Path]:
    proc, results, log, marker = run
    assert pause(marker, proc, log) == {"epoch": 1, "batch": 1, "step": STEPS + 1}
    return proc, results, log


def test_second_train_into_a_busy_results_folder_is_refused(paused_run, digits, tkit):
    proc, results, _ = paused(paused_run)
    owner = (results / LOCK_NAME).read_text()
    assert owner.split()[-1] == str(proc.pid)
    second = tkit(*train_argv(digits, results)[1:])  # in this process, like a second terminal would
    second.assert_user_error(str(results), "in use", str(proc.pid))
    assert proc.poll() is None  # the first run is untouched
    assert (results / LOCK_NAME).read_text() == owner


def test_sigint_saves_a_safe_resumable_checkpoint_and_exits_130(paused_run, digits):
    proc, results, log = paused(paused_run)
    kill_group(proc, signal.SIGINT)  # what Ctrl-C sends to the terminal's foreground process group
    rc = proc.wait(timeout=240)
    assert rc == 130, output(log)
    err = err_path(log).read_text()
    assert "train.resume=true" in err and str(results) in err, err
    assert "Traceback" not in err
    ckpt = load_safely(results / "last.ckpt")  # no pickled objects in the interrupt checkpoint
    assert ckpt["global_step"] == STEPS + 1 and "transferkit" in ckpt
    assert not (results / LOCK_NAME).exists()

    rc, _, err = finish(start_tkit(train_argv(digits, results, "train.resume=true")))
    assert rc == 0, err[-3000:]
    assert [r["epoch"] for r in status_lines(results)] == [0, 1, 2]
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 3 and metrics["best"]["val/acc"] is not None
    assert load_safely(results / "last.ckpt")["epoch"] >= 2


# -- 4. atomic checkpoint writes ---------------------------------------------------------------------

def test_checkpoint_killed_mid_write_never_leaves_a_broken_last_ckpt(tmp_path):
    """15 checkpoint writes over an existing last.ckpt, each SIGKILLed after a random short delay."""
    folder = tmp_path / "run"
    folder.mkdir()
    path = folder / "last.ckpt"
    server = start_save_server(path, megabytes=16)
    try:
        assert server.stdout.readline().strip() == "ready"

        def write(version: int, kill_after: float) -> str:
            server.stdin.write(f"{version} {kill_after}\n")
            server.stdin.flush()
            return server.stdout.readline().split()[0]

        start = time.perf_counter()
        assert write(0, -1) == "finished"  # the existing last.ckpt, written to the end
        full_write = time.perf_counter() - start
        size = path.stat().st_size
        assert size > 16 * 2**20
        rng = random.Random(7)
        delays = [0.02 * full_write, 0.3 * full_write] + [rng.uniform(0, 1.5 * full_write) for _ in range(13)]
        current, outcomes, old_kept = 0, [], 0
        for version, delay in enumerate(delays, start=1):
            outcome = write(version, delay)
            assert outcome in ("killed", "finished")
            outcomes.append(outcome)
            found = int(torch.load(path, map_location="cpu", weights_only=True)["version"])
            if outcome == "finished":
                assert found == version
            else:  # the old file or, when the kill came after the rename, the new one; never a torn file
                assert found in (current, version), (found, current, version)
                old_kept += found == current
            current = found
            leftovers = sorted(folder.glob(".last.ckpt.*.tmp"))
            assert len(leftovers) <= outcomes.count("killed")  # at most one per killed write
            assert all(p.stat().st_size <= size for p in leftovers)  # none grows past one checkpoint
            # temp files never look like checkpoints to anything that lists *.ckpt
            assert [p.name for p in folder.glob("*.ckpt")] == ["last.ckpt"]
        assert old_kept >= 1, f"no write was killed before its rename: {outcomes}"
        last_kill = write(len(delays) + 1, 0.3 * full_write)  # most likely leaves a temp file for the next run
        current = int(torch.load(path, map_location="cpu", weights_only=True)["version"])
    finally:
        kill_group(server)
        server.wait(timeout=30)
    # The next run in this folder (a new process: RunFolder, as every verb starts) removes what the killed
    # writes left, says how many, and leaves last.ckpt as it was.
    left = sorted(folder.glob(".last.ckpt.*.tmp"))
    next_run = subprocess.run([sys.executable, "-c", NEXT_RUN, str(folder)], capture_output=True, text=True,
                              env=child_env(), timeout=240)
    assert next_run.returncode == 0, next_run.stderr
    assert sorted(folder.glob(".*.tmp")) == []
    assert (f"removed {len(left)} stale temporary file(s)" in next_run.stderr) == bool(left), next_run.stderr
    assert int(torch.load(path, map_location="cpu", weights_only=True)["version"]) == current
    print(f"\natomic writes: {outcomes.count('killed')}/15 killed, {old_kept} before the rename, "
          f"{len(leftovers)} temp files left after the loop, {len(left)} after one more ({last_kill}), "
          f"all removed by the next run; one write {full_write:.3f}s")


NEXT_RUN = r"""
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(message)s")
from transferkit.engine.run import RunFolder
with RunFolder(sys.argv[1]):
    pass
"""
