"""A full disk: every write that runs out of space is a one-line `tkit: error: no space left on device
writing FILE (...)`, exit 2, with no temp file left and every earlier file byte-identical.

The file systems are real: small tmpfs mounts made by the test (which needs root and a kernel that
lets it mount; otherwise the tests are skipped and say why), filled with a filler file.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import torch

pytest.register_assert_rewrite("crash_helpers", "rel_helpers")
from crash_helpers import child_env, tkit_cmd  # noqa: E402
from rel_helpers import FAST, CliResult  # noqa: E402

from transferkit.engine.run import LOCK_NAME  # noqa: E402
from transferkit.errors import DiskFullError  # noqa: E402
from transferkit.io import atomic_torch_save, atomic_write_json, atomic_write_text  # noqa: E402

MB = 2**20


@pytest.fixture
def small_fs(tmp_path):
    """small_fs(bytes) -> the root of a new tmpfs of that size (unmounted after the test)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the disk-full behaviour is not tested without one")
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        where = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); "
                        "the disk-full behaviour is not tested")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(fs: Path, leave: int) -> None:
    """Fill `fs` with one file until about `leave` bytes are free."""
    free = shutil.disk_usage(fs).free
    with open(fs / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    assert shutil.disk_usage(fs).free <= leave + 8192


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def temp_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name == ".tkit-write-test")


def run_cli(*argv: str) -> CliResult:
    done = subprocess.run(tkit_cmd(*argv), capture_output=True, text=True, env=child_env(), timeout=300)
    return CliResult(done.returncode, done.stdout, done.stderr)


# -- the atomic writers themselves -------------------------------------------------------------------

def test_atomic_writes_on_a_full_disk_raise_disk_full_and_keep_the_old_file(small_fs):
    fs = small_fs(MB)
    ckpt, metrics, log = fs / "last.ckpt", fs / "metrics.json", fs / "notes.txt"
    atomic_torch_save({"w": torch.ones(100)}, ckpt)
    atomic_write_json(metrics, {"acc": 0.5})
    atomic_write_text(log, "old\n")
    before = snapshot(fs)
    # torch's zip writer does not report the short write: it fails a later check ("unexpected pos ...")
    with pytest.raises(DiskFullError, match=rf"^no space left on device writing {ckpt} \(about 4\.2 MB needed, "
                                            r"[0-9.]+ (kB|MB) free there\)"):
        atomic_torch_save({"w": torch.ones(2**20)}, ckpt)
    with pytest.raises(DiskFullError, match=f"writing {metrics}"):
        atomic_write_json(metrics, {"big": "x" * (2 * MB)})
    with pytest.raises(DiskFullError, match=f"writing {log}"):
        atomic_write_text(log, "y" * (2 * MB))
    assert snapshot(fs) == before  # the old files, byte for byte, and nothing else (no temp files)


# -- the CLI ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("leave", [0, 12_000], ids=["full", "room-for-the-spec-only"])
def test_training_on_an_almost_full_disk_stops_with_one_line_and_leaves_nothing_behind(small_fs, digits, tkit, leave):
    """Full: the results folder's write probe fails (and is removed). Room for spec.yaml only: TensorBoard's
    background writer fails first; one warning line, no thread traceback."""
    fs = small_fs(256 * 1024)
    fill(fs, leave=leave)
    results = fs / "run"
    r = tkit("train", "-r", results, f"data.train_dir={digits / 'train'}", f"data.val_dir={digits / 'val'}", *FAST)
    r.assert_user_error("no space left on device", str(results))
    assert "Exception in thread" not in r.err
    assert temp_files(results) == [] and not (results / LOCK_NAME).exists()
    if leave == 0:
        assert sorted(p.name for p in results.iterdir()) == []  # no .tkit-write-test, no lock, no log


def test_log_txt_on_a_full_disk_gives_one_warning_not_a_traceback_per_line(small_fs, capsys):
    import logging

    from transferkit.engine.run import RunFolder

    fs = small_fs(256 * 1024)
    log = logging.getLogger("transferkit")
    with RunFolder(fs / "run"):
        fill(fs, leave=0)
        for i in range(20):
            log.warning("line %d %s", i, "x" * 5000)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Logging error" not in err, err[:2000]
    assert err.count("can no longer be written (no space left on device)") == 1, err[:2000]


def test_training_that_fills_the_disk_stops_with_one_line_and_keeps_the_earlier_run(trained, digits, small_fs):
    """A run resumed on a disk with room for its logs but not for its next checkpoint."""
    size = sum(p.stat().st_size for p in trained.rglob("*") if p.is_file())
    fs = small_fs(size + 4 * MB)
    results = fs / "run"
    shutil.copytree(trained, results)
    kept = {name: data for name, data in snapshot(results).items()
            if name in ("last.ckpt", "best.ckpt", "metrics.json", "load_report.json")}
    assert {"last.ckpt", "best.ckpt", "metrics.json"} <= set(kept)
    status = (results / "status.json").read_bytes()
    fill(fs, leave=256 * 1024)
    r = run_cli("classification", "train", "-r", str(results), f"data.train_dir={digits / 'train'}",
                f"data.val_dir={digits / 'val'}", *FAST, "train.epochs=2", "train.resume=true")
    message = r.assert_user_error("no space left on device writing", str(results), "needed")
    assert ".ckpt" in message, message  # the checkpoint at the end of epoch 2 is what no longer fits
    assert temp_files(results) == []
    after = snapshot(results)
    for name, data in kept.items():
        assert after[name] == data, f"{name} changed"
    # status.json may have gained epoch 2's line (written before the checkpoint); what it held is unchanged
    assert after["status.json"].startswith(status)
    assert [json.loads(line)["epoch"] for line in after["status.json"].splitlines()] in ([0], [0, 1])
    assert not (results / LOCK_NAME).exists()
    print(message)


def test_export_onto_a_full_disk_stops_with_one_line_and_keeps_the_earlier_export(trained, digits, small_fs):
    fs = small_fs(MB)
    results = fs / "export"
    results.mkdir()
    (results / "model.onnx").write_bytes(os.urandom(100_000))  # an earlier export's files
    (results / "export_report.json").write_text('{"onnx": "model.onnx"}\n')
    kept = snapshot(results)
    fill(fs, leave=64 * 1024)
    r = run_cli("classification", "export", "-m", str(trained / "best.ckpt"), "-r", str(results),
                f"data.train_dir={digits / 'train'}", f"data.val_dir={digits / 'val'}", *FAST)
    print(r.assert_user_error("no space left on device writing", str(results / "model.onnx")))
    assert temp_files(results) == []
    after = snapshot(results)
    for name, data in kept.items():
        assert after[name] == data, f"{name} changed"
