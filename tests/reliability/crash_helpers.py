"""Helpers for the crash-and-resume tests: training subprocesses that stop at a known step.

`start_paused_train` runs the real CLI (`transferkit.cli.main`, exactly what `tkit` runs) in a
fresh process group, with one extra test-only Lightning callback: when training reaches
(epoch, batch) it writes a marker file and sleeps. The test then signals the whole process group
(SIGKILL for a crash, SIGINT for Ctrl-C, SIGTERM for preemption) at a point that is the same on every
run, however fast or slow the machine. SIGTERM ends the sleep the way it ends a batch in a real run
(Lightning notes it and stops after the batch); the sleep is bounded, so a forgotten process exits
on its own.

`SAVE_SERVER` is a small process that imports torch once and forks one child per checkpoint write,
so the atomic-write test can kill many writes without paying for many interpreter starts.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PAUSED_TRAIN = r"""
import json, os, signal, sys, time
# A process started from a background job of a non-interactive shell (`make test &`, nohup, some CI
# runners) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt: Ctrl-C would be
# lost. A terminal's foreground command always has it, so the child restores it to be that command.
signal.signal(signal.SIGINT, signal.default_int_handler)
marker, epoch, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
import lightning.pytorch as pl
import transferkit.engine.trainer as trainer_module
from transferkit.cli import main

class PauseAt(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch_data, batch_idx):
        if trainer.current_epoch == epoch and batch_idx == batch:
            tmp = marker + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"epoch": trainer.current_epoch, "batch": batch_idx, "step": trainer.global_step}, f)
            os.replace(tmp, marker)
            deadline = time.monotonic() + 300  # the test signals us long before this; never hang a CI job
            while time.monotonic() < deadline:
                time.sleep(0.02)
                if trainer.received_sigterm:  # as in production: Lightning ends the run after this batch
                    return
            os._exit(3)

build = trainer_module.build_trainer
def build_with_pause(*args, **kwargs):
    kwargs["callbacks"] = [*kwargs.get("callbacks", ()), PauseAt()]
    return build(*args, **kwargs)
trainer_module.build_trainer = build_with_pause  # api.train imports it at call time
sys.exit(main(sys.argv[4:]))
"""


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", COLUMNS="200")
    # One intra-op thread per child: the reference run and the crashed run can overlap on a small
    # CI machine, and every run compared in a test computes with the same thread count.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def tkit_cmd(*argv) -> list[str]:
    """The `tkit` console script, as a command line for subprocess."""
    return [sys.executable, "-c", "import sys; from transferkit.cli import main; sys.exit(main())", *map(str, argv)]


def start_paused_train(marker: Path, epoch: int, batch: int, argv: list, log: Path,
                       env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `tkit <argv>` that pauses before training batch `batch` of epoch `epoch` (0-based).

    stdout (the log lines) goes to `log`, stderr (the `tkit: ...` messages) to `log` + ".err";
    `env`: extra environment variables (a simulated SLURM job)."""
    cmd = [sys.executable, "-c", PAUSED_TRAIN, str(marker), str(epoch), str(batch), *map(str, argv)]
    with open(log, "w", encoding="utf-8") as out, open(err_path(log), "w", encoding="utf-8") as err:
        return subprocess.Popen(cmd, stdout=out, stderr=err, env={**child_env(), **(env or {})},
                                start_new_session=True)


def err_path(log: Path) -> Path:
    return Path(str(log) + ".err")


def output(log: Path) -> str:
    return f"--- stdout\n{log.read_text()[-3000:]}\n--- stderr\n{err_path(log).read_text()[-3000:]}"


def wait_for(proc: subprocess.Popen, path: Path, log: Path, timeout: float = 90, nonempty: bool = True) -> str:
    """Wait (bounded) for `path` to exist (and hold text); fail with the child's output if it exits or times out."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.is_file():
            text = path.read_text()
            if text or not nonempty:
                return text
        if proc.poll() is not None:
            raise AssertionError(f"training exited with {proc.returncode} before {path.name} appeared:\n{output(log)}")
        time.sleep(0.05)
    kill_group(proc)
    raise AssertionError(f"{path.name} did not appear in {timeout}s:\n{output(log)}")


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def status_lines(results: Path) -> list[dict]:
    path = Path(results) / "status.json"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


SAVE_SERVER = r"""
import os, signal, sys, time
import torch
from transferkit.io import atomic_torch_save
path, megabytes = sys.argv[1], int(sys.argv[2])
weights = {f"layer{i}.weight": torch.full((megabytes * 2**20 // 4 // 8,), float(i)) for i in range(8)}
print("ready", flush=True)
for line in sys.stdin:
    version, delay = line.split()
    version, delay = int(version), float(delay)
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the writer: one checkpoint over the existing file, then exit
        try:
            atomic_torch_save({"version": torch.tensor(version), "state_dict": weights}, path)
        except BaseException:
            os._exit(1)
        os._exit(0)
    if delay >= 0:
        time.sleep(delay)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        outcome = "killed"
    else:
        outcome = "finished" if os.WEXITSTATUS(status) == 0 else "failed"
    print(f"{outcome} {time.perf_counter() - start:.4f}", flush=True)
"""


def start_save_server(path: Path, megabytes: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SAVE_SERVER, str(path), str(megabytes)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=child_env(), start_new_session=True)
