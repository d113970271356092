"""Temp files left behind by writes killed between writing and renaming are cleaned up, and only those.

Every atomic write (transferkit.io) writes `.TARGET.XXXXXXXX.tmp` next to TARGET and renames it;
a SIGKILL in between leaves the temp file. The next writer into that folder and the next run in
that results folder (RunFolder) remove such files when they were last changed before their own
process started, so a write still in progress in another process is never touched. The kill loop
itself is in test_rel_crash_resume.py.
"""
from __future__ import annotations

import os
import time

from safetensors import safe_open

from rel_helpers import FAST, read_json

from transferkit.engine.run import RunFolder
from transferkit.io import atomic_write_json, process_start_time, stale_temp_files

STALE_NAMES = (".metrics.json.abcd1234.tmp", ".metrics.json.q_9z0x7y.tmp", ".last.ckpt.00000000.tmp")
NOT_OURS = (".metrics.json.tmp", "metrics.json.abcd1234.tmp", ".metrics.json.ABCD1234.tmp",
            ".metrics.json.abc1234.tmp", ".metrics.json.abcd1234.tmp.bak", "notes.tmp")


def plant(folder, name: str, before_start: float) -> os.PathLike:
    """A file last changed `before_start` seconds before this process started (negative: after)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"half a checkpoint")
    when = process_start_time() - before_start
    os.utime(path, (when, when))
    return path


def test_process_start_time_is_before_now_and_not_long_before_this_test_session():
    started = process_start_time()
    assert started <= time.time()
    assert time.time() - started < 24 * 3600


def test_a_writer_removes_stale_temp_files_of_its_folder_and_nothing_else(tmp_path):
    stale = [plant(tmp_path, name, 60) for name in STALE_NAMES]
    foreign = [plant(tmp_path, name, 60) for name in NOT_OURS]
    (tmp_path / ".dir.abcd1234.tmp").mkdir()  # a folder, not a temp file
    live = plant(tmp_path, ".metrics.json.live0000.tmp", -1)  # changed after we started: someone is writing it
    assert stale_temp_files(tmp_path) == sorted(stale)
    assert stale_temp_files(tmp_path, target="last.ckpt") == [tmp_path / ".last.ckpt.00000000.tmp"]

    atomic_write_json(tmp_path / "metrics.json", {"ok": True})
    assert read_json(tmp_path / "metrics.json") == {"ok": True}
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in foreign) and live.exists()
    assert (tmp_path / ".dir.abcd1234.tmp").is_dir()


def test_run_folder_removes_stale_temp_files_on_start_and_logs_how_many(tmp_path):
    results = tmp_path / "run"
    stale = [plant(results, ".last.ckpt.abcd1234.tmp", 5), plant(results / "labels", ".000001.txt.zz99zz99.tmp", 5),
             plant(results / "annotated" / "deeper", ".a.png.x1y2z3w4.tmp", 3600)]
    keep = [plant(results, "notes.tmp", 5), plant(results, ".last.ckpt.live0000.tmp", -1)]
    with RunFolder(results):
        pass
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in keep)
    assert f"removed 3 stale temporary file(s) of interrupted writes from {results}" in \
        (results / "log.txt").read_text(encoding="utf-8")


def test_export_writes_safetensors_atomically_and_cleans_an_earlier_killed_export(trained, digits, tmp_path, tkit):
    out = tmp_path / "export"
    leftover = plant(out, ".model.safetensors.k1ll3d00.tmp", 5)  # an export killed mid-write
    result = tkit("export", "-r", out, "-m", trained / "best.ckpt", f"data.train_dir={digits / 'train'}",
                  f"data.val_dir={digits / 'val'}", *FAST)
    assert result.rc == 0, result.err
    assert not leftover.exists()
    assert not [p for p in out.rglob("*.tmp")], "export left a temp file"
    with safe_open(out / "model.safetensors", framework="pt") as f:
        assert len(list(f.keys())) > 0 and "transferkit" in f.metadata()
