"""The results folder of one run: rank-zero guard, lock file, log.txt."""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from pathlib import Path

from ..errors import DiskFullError, SpecError, first_line
from ..io import disk_full_error, is_disk_full, remove_stale_temp_files
from .memory import tune_allocator

log = logging.getLogger("transferkit")

LOCK_NAME = ".tkit.lock"


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


def _pid_alive(pid: int) -> bool:
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

    def __init__(self, path: str | Path, *, log_file: str | Path | None = None, lock: bool = True):
        self.path = Path(path)
        self.log_file = Path(log_file) if log_file else self.path / "log.txt"
        self.lock = lock and is_rank_zero()
        self._handler: logging.Handler | None = None

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
            try:
                self._handler = LogFileHandler(self.log_file, encoding="utf-8")
            except OSError as e:  # __exit__ does not run when __enter__ fails: release the lock here
                if self.lock:
                    (self.path / LOCK_NAME).unlink(missing_ok=True)
                raise SpecError(f"log file {self.log_file} cannot be written ({e.strerror}); give --log_file a file "
                                "in an existing, writable folder") from None
            self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            for name in ("transferkit", "lightning.pytorch", "lightning.fabric"):
                logging.getLogger(name).addHandler(self._handler)
            removed = remove_stale_temp_files(self.path, recursive=True)  # left by writes killed mid-way
            if removed:
                log.warning("removed %d stale temporary file(s) of interrupted writes from %s", removed, self.path)
        return self

    def __exit__(self, *exc) -> None:
        if self._handler is not None:
            for name in ("transferkit", "lightning.pytorch", "lightning.fabric"):
                logging.getLogger(name).removeHandler(self._handler)
            self._handler.close()
        if self.lock:
            (self.path / LOCK_NAME).unlink(missing_ok=True)

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
            if host == socket.gethostname() and not _pid_alive(int(pid)):
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
