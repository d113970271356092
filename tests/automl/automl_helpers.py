"""What the automl tests share: the overrides that make a trial take a second or two, the CLI in this process and
in a child process, trials.csv, and a probe task whose validation metric is a known function of its learning rate."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from transferkit.cli import main
from transferkit.tasks.classification import ClassificationTask

SRC = Path(__file__).resolve().parents[2] / "src"

# a tiny timm ResNet from random weights on 32 px digits, 2 images per class per split, no histograms
TINY = ["model.backbone=timm:test_resnet", "data.image_size=32", "train.batch_size=8", "train.num_workers=0", "train.epochs=1", "model.pretrained=false",
        "train.histograms=false", "evaluation.batch_size=16", "train.log_every_n_steps=1"]
LR_SPACE = "automl.search_space={train.learning_rate: {float: [0.001, 0.05], log: true}}"


def data_args(root: Path) -> list[str]:
    return [f"data.train_dir={root / 'train'}", f"data.val_dir={root / 'val'}"]


def tkit(*args) -> int:
    return main([str(a) for a in args])


def child_env() -> dict[str, str]:
    """The environment of a child process that imports this worktree's transferkit, offline."""
    return {**os.environ, "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])}


def tkit_process(*args, output: Path) -> subprocess.Popen:
    """`python -m transferkit ARGS` in a new process, with this worktree's code; its output goes to `output`."""
    with open(output, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "transferkit", *map(str, args)], env=child_env(),
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def finished(proc: subprocess.Popen, output: Path, timeout: float = 600) -> int:
    """The exit code of `proc` (killed after `timeout` s: a hang guard, not a time limit), its output shown on failure."""
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"hung; output:\n{output.read_text(errors='replace')[-4000:]}") from None
    if code != 0:
        print(output.read_text(errors="replace")[-4000:])
    return code


def read_trials(results: Path) -> list[dict[str, str]]:
    with open(results / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


class ProbeTask(ClassificationTask):
    """Classification whose `val/score` is train.learning_rate x 100, and whose build raises a CUDA-style
    out-of-memory error when train.learning_rate > 0.5: trials that are better, worse or failing by design."""

    name = "automl_probe"

    def build_training_module(self, spec, data):
        if spec.train.learning_rate > 0.5:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB (probe)")
        module, report = super().build_training_module(spec, data)
        score = float(spec.train.learning_rate * 100)
        original = module.on_validation_epoch_end

        def on_validation_epoch_end() -> None:
            original()
            module.log("val/score", score)

        module.on_validation_epoch_end = on_validation_epoch_end
        return module, report
