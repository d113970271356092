"""Fixtures for the bad-input corpus: a tiny digits dataset, one trained checkpoint, a CLI runner.

Every case runs the real CLI in-process (`transferkit.cli.main`) with settings that train in a
second or two on a CPU: 3 classes, 4 training and 2 validation images each, 32x32 pixels.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from transferkit.cli import main

# tests/reliability is on sys.path (no __init__.py); rewrite the helpers' asserts for clear failures.
pytest.register_assert_rewrite("rel_helpers")
from rel_helpers import CLASSES, FAST, CliResult  # noqa: E402


@pytest.fixture
def tkit(capsys):
    """tkit(*argv) -> CliResult; runs `tkit classification ...` in this process."""
    def run(*argv: str) -> CliResult:
        capsys.readouterr()
        rc = main(["classification", *map(str, argv)])
        captured = capsys.readouterr()
        return CliResult(rc, captured.out, captured.err)
    return run


@pytest.fixture(scope="session")
def _session_home(tmp_path_factory):
    """Session fixtures run outside the per-test TRANSFERKIT_HOME; give them the same private one."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRANSFERKIT_HOME", str(tmp_path_factory.getbasetemp() / "tkit_home"))
        yield


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Path:
    """Pristine demo data: DIR/train/<c>, DIR/val/<c>, DIR/train.csv, DIR/val.csv for classes 0-2.

    Tests must not modify it: copy what you change (`copy_split`)."""
    from transferkit.data.demo import build_demo

    root = tmp_path_factory.mktemp("digits")
    build_demo("digits", root, seed=0, per_class=4, val_per_class=2, size=32)
    for split in ("train", "val"):
        for folder in (root / split).iterdir():
            if folder.name not in CLASSES:
                shutil.rmtree(folder)
        csv = root / f"{split}.csv"
        rows = csv.read_text(encoding="utf-8").splitlines()
        kept = [rows[0]] + [r for r in rows[1:] if r.rsplit(",", 1)[1] in CLASSES]
        csv.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return root


@pytest.fixture
def copy_split(digits, tmp_path):
    """copy_split("train") -> a private copy of the train folder to add bad files to."""
    def copy(split: str, name: str | None = None) -> Path:
        return Path(shutil.copytree(digits / split, tmp_path / (name or split)))
    return copy


@pytest.fixture(scope="session")
def trained(digits, tmp_path_factory, _session_home) -> Path:
    """Results folder of one clean training run (best.ckpt, last.ckpt, metrics.json). Read-only."""
    results = tmp_path_factory.mktemp("trained") / "run"
    rc = main(["classification", "train", "-r", str(results), f"data.train_dir={digits / 'train'}",
               f"data.val_dir={digits / 'val'}", *FAST])
    assert rc == 0 and (results / "best.ckpt").is_file()
    return results
