"""The results folder of one run: rank-zero guard, lock file, log.txt, and which verb's results it holds.

A verb writes its results into its own folder (`-r`). `RUN_RECORD` names the task and verb whose results
the folder holds; a verb refuses a folder holding another verb's (or another task's) results unless told
to overwrite them, so `evaluate -r` on a training folder cannot silently replace its metrics.json and
spec.yaml. The same verb may write into its folder again (re-evaluating; training has its own rules:
resume or --overwrite). Folders written before the record existed are recognised by the files that
only one verb writes (`VERB_FILES`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
from pathlib import Path

from ..errors import DiskFullError, SpecError, first_line
from ..io import atomic_write_json, disk_full_error, is_disk_full, remove_stale_temp_files
from .memory import tune_allocator

log = logging.getLogger("transferkit")

LOCK_NAME = ".tkit.lock"
RUN_RECORD = ".tkit-run.json"
# Files that only this verb writes, in the order a folder is recognised by (a training folder also holds
# metrics.json, so train comes before evaluate).
VERB_FILES = {
    "automl": ("trials.csv", "study.db", "best_spec.yaml"),
    "train": ("best.ckpt", "last.ckpt", "status.json"),
    "prune": ("pruned.ckpt", "prune_report.json"),
    "export": ("export_report.json", "model.onnx"),
    "inference": ("inference.json",),
    "evaluate": ("metrics.json",),
}


def global_rank() -> int:
    """Rank of this process under torchrun, SLURM or Lightning's DDP launcher (0 when alone)."""
    for var in ("RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var])
    local = int(os.environ.get("LOCAL_RANK", 0))
    node = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)))
    # Lightning's subprocess launcher sets LOCAL_RANK/NODE_RANK for the children it starts.
    world_local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return node * world_local + local


def is_rank_zero() -> bool:
    return global_rank() == 0


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LogFileHandler(logging.FileHandler):
    """log.txt: when a write to it fails (a full disk), says so once on stderr and stops writing it.

    logging's own handler prints a traceback for every record it fails to write."""

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        if self.failed:
            return
        self.failed = True
        error = sys.exc_info()[1]
        reason = "no space left on device" if error is not None and is_disk_full(error) else (
            first_line(error) if error is not None else "unknown error")
        sys.stderr.write(f"tkit: warning: {self.baseFilename} can no longer be written ({reason}); "
                         "the log continues on the console only\n")

    def close(self) -> None:
        try:
            super().close()
        except OSError:  # the unwritten tail of the log; already reported by handleError
            self.failed = True


class RunFolder:
    """Owns a results folder for the length of a verb: creates it, locks it, logs into it.

    Only rank zero takes the lock and writes files; the other DDP ranks share the folder read-only.
    """

    def __init__(self, path: str | Path, *, log_file: str | Path | None = None, lock: bool = True,
                 task: str | None = None, verb: str | None = None, overwrite: bool = False):
        """`task` and `verb` (both or neither) make the folder refuse another verb's results unless `overwrite`."""
        self.path = Path(path)
        self.log_file = Path(log_file) if log_file else self.path / "log.txt"
        self.lock = lock and is_rank_zero()
        self.task, self.verb, self.overwrite = task, verb, overwrite
        self._handler: logging.Handler | None = None
        self._level: int | None = None  # the transferkit logger's own level, raised to INFO for the run

    def __enter__(self) -> "RunFolder":
        tune_allocator()  # every verb runs inside a RunFolder: the process is about to do tensor work
        if is_rank_zero():
            probe = self.path / ".tkit-write-test"
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                probe.write_text("ok")
            except OSError as e:
                if is_disk_full(e):
                    raise DiskFullError(f"no space left on device for results folder {self.path}; free some space, "
                                        "or pass a folder on another disk with -r DIR") from e
                raise SpecError(f"results folder {self.path} cannot be written ({e.strerror}); pass a writable -r DIR") from e
            finally:  # a file system with room for the name but not the bytes keeps the empty probe
                with contextlib.suppress(OSError):
                    probe.unlink(missing_ok=True)
            if self.lock:
                self._take_lock()
            if self.verb is not None:
                try:
                    self._check_owner()
                except BaseException:  # __exit__ does not run when __enter__ fails: release the lock here
                    self._release_lock()
                    raise
            try:
                self._handler = LogFileHandler(self.log_file, encoding="utf-8")
            except OSError as e:
                self._release_lock()
                raise SpecError(f"log file {self.log_file} cannot be written ({e.strerror}); give --log_file a file "
                                "in an existing, writable folder") from None
            self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            for name in ("transferkit", "lightning.pytorch", "lightning.fabric"):
                logging.getLogger(name).addHandler(self._handler)
            ours = logging.getLogger("transferkit")
            if ours.getEffectiveLevel() > logging.INFO:  # a Python caller that set no level: log.txt still records
                self._level = ours.level                 # the run's INFO lines, as the CLI's does
                ours.setLevel(logging.INFO)
            removed = remove_stale_temp_files(self.path, recursive=True)  # left by writes killed mid-way
            if removed:
                log.warning("removed %d stale temporary file(s) of interrupted writes from %s", removed, self.path)
        return self

    def __exit__(self, *exc) -> None:
        if self._handler is not None:
            for name in ("transferkit", "lightning.pytorch", "lightning.fabric"):
                logging.getLogger(name).removeHandler(self._handler)
            self._handler.close()
            if self._level is not None:
                logging.getLogger("transferkit").setLevel(self._level)
                self._level = None
        self._release_lock()

    def _release_lock(self) -> None:
        if self.lock:
            (self.path / LOCK_NAME).unlink(missing_ok=True)

    # -- whose results the folder holds ----------------------------------------------------------
    def owner(self) -> tuple[str | None, str | None, list[str]]:
        """(task, verb, evidence files) of the results in the folder; (None, None, []) when it holds none."""
        record = self.path / RUN_RECORD
        if record.is_file():
            try:
                found = json.loads(record.read_text(encoding="utf-8"))
                task, verb = found.get("task"), found.get("verb")
            except (OSError, ValueError, AttributeError):
                task = verb = None
            verb = verb if isinstance(verb, str) else None
            files = [n for n in VERB_FILES.get(verb, ()) + ("spec.yaml",) if (self.path / n).exists()]
            if verb is not None and files:
                return (task if isinstance(task, str) else None), verb, files
        for verb, names in VERB_FILES.items():
            files = [n for n in names if (self.path / n).exists()]
            if files:
                return None, verb, files
        return None, None, []

    def _check_owner(self) -> None:
        task, verb, files = self.owner()
        if verb is None or self.overwrite or (verb == self.verb and task in (None, self.task)):
            return
        raise SpecError(
            f"results folder {self.path} holds the results of `tkit {task or self.task} {verb}` "
            f"({', '.join(files[:3])}), which `tkit {self.task} {self.verb}` would overwrite: pass another -r DIR, "
            "or --overwrite (overwrite=True in Python) to write there anyway")

    def claim(self) -> None:
        """Record that this verb's results are in the folder: called just before the verb's first write."""
        if self.verb is not None and is_rank_zero():
            atomic_write_json(self.path / RUN_RECORD, {"task": self.task, "verb": self.verb})

    def _take_lock(self) -> None:
        lock = self.path / LOCK_NAME
        me = f"{socket.gethostname()} {os.getpid()}"
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            host, _, pid = lock.read_text(errors="replace").strip().partition(" ")
            if not pid.isdigit():
                raise SpecError(f"results folder {self.path} has an unreadable lock file {lock}; if no run is "
                                "using the folder, delete that file") from None
            if host == socket.gethostname() and not pid_alive(int(pid)):
                log.warning("removing a stale lock in %s left by process %s, which is gone", self.path, pid)
                lock.unlink(missing_ok=True)
                return self._take_lock()
            raise SpecError(
                f"results folder {self.path} is in use by another run (process {pid} on {host}); "
                "wait for it, or pass another -r DIR"
            ) from None
        try:
            with os.fdopen(fd, "w") as f:
                f.write(me)
        except OSError as e:  # an empty lock file would block every later run in this folder
            lock.unlink(missing_ok=True)
            if is_disk_full(e):
                raise disk_full_error(lock, e) from e
            raise
