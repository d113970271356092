"""Atomic writes and safe loads: a crash mid-write never leaves a half-written file behind."""
from __future__ import annotations

import json
import os
import pickle
import pickletools
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .errors import ModelError, first_line

_ANSI = re.compile(r"\x1b\[[0-9;]*m")

_UMASK = os.umask(0)
os.umask(_UMASK)

# The temp file of an atomic write of TARGET is `.TARGET.XXXXXXXX.tmp` (mkstemp's 8 random characters).
# A process killed between creating and renaming it leaves that file behind; nothing else makes such names.
_TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp")
_IMPORTED = time.time()
_swept: tuple[int, set[Path]] = (-1, set())  # (pid, folders this process has already swept)


def process_start_time() -> float:
    """When this process started (wall clock; a forked child is new at its fork), to 10 ms on Linux.

    Elsewhere, when transferkit.io was imported: later than the start, so it may keep, never
    remove, a stale file written in between."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rpartition(")")[2].split()
        started_after_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime
        return time.time() - max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started_after_boot)
    except (OSError, ValueError, IndexError, AttributeError):
        return _IMPORTED


def stale_temp_files(folder: str | os.PathLike, target: str | None = None, recursive: bool = False) -> list[Path]:
    """Temp files of atomic writes (of `target`, or of any file) in `folder` whose writer is gone.

    Only names of exactly the form this module gives its temp files count, and only files last
    changed before this process started: a write still in progress changes its file after that."""
    started = process_start_time()
    found = []
    for root, dirs, files in os.walk(folder) if recursive else [(folder, [], _names(folder))]:
        for name in files:
            match = _TEMP_NAME.fullmatch(name)
            if match is None or (target is not None and match["target"] != target):
                continue
            path = Path(root) / name
            try:
                if path.is_file() and not path.is_symlink() and path.stat().st_mtime < started:
                    found.append(path)
            except OSError:
                continue
    return sorted(found)


def remove_stale_temp_files(folder: str | os.PathLike, target: str | None = None, recursive: bool = False) -> int:
    """Delete `stale_temp_files(folder, target, recursive)`; returns how many were removed."""
    removed = 0
    for path in stale_temp_files(folder, target, recursive):
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:  # another process removed it first
            pass
    return removed


def _names(folder: str | os.PathLike) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _sweep_once(folder: Path) -> None:
    """Remove stale temp files from `folder` on this process's first atomic write there (one listing
    per folder per process, not one per write: inference writes thousands of files into one folder)."""
    global _swept
    if _swept[0] != os.getpid():  # a forked child sweeps again: it is a new process
        _swept = (os.getpid(), set())
    if folder not in _swept[1]:
        _swept[1].add(folder)
        remove_stale_temp_files(folder)


def atomic_write_with(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Atomically create `path` with any writer: `write(tmp_path)` writes the whole file to tmp_path."""
    return _atomic(path, write)


def _atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write via `write(tmp_path)` to a temp file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return _atomic(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return _atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    import torch

    return _atomic(path, lambda p: torch.save(obj, p))


def describe_missing(path: str | os.PathLike) -> str:
    """What `path` is when a regular file was wanted: "does not exist", "is a folder", "is a device" ..."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "does not exist"
    except NotADirectoryError:
        return "does not exist (a folder on its path is a file)"
    except OSError as e:
        return f"cannot be read ({e.strerror or type(e).__name__})"
    for test, what in ((stat.S_ISDIR, "is a folder, not a file"), (stat.S_ISCHR, "is a character device, not a file"),
                       (stat.S_ISBLK, "is a block device, not a file"), (stat.S_ISFIFO, "is a named pipe, not a file"),
                       (stat.S_ISSOCK, "is a socket, not a file")):
        if test(mode):
            return what
    return "is not a regular file" if not stat.S_ISREG(mode) else "is a file"


# What torch says when weights-only unpickling meets something other than tensors and plain containers.
_UNSAFE_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_UNSAFE_OPCODE = re.compile(r"Unsupported operand (\d+)")
_PICKLE_OPCODES = {op.code: op.name for op in pickletools.opcodes}


def safe_torch_load(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """torch.load with weights_only=True; every failure becomes a one-line ModelError.

    The only torch.load in transferkit: Lightning's resume goes through it too (AtomicCheckpointIO)."""
    import warnings

    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{what} {path} {describe_missing(path)}: pass an existing file with -m")
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4 ...": the refusal below says what matters
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged archives
        raise torch_load_error(path, what, e) from None


def torch_load_error(path: str | os.PathLike, what: str, error: Exception) -> ModelError:
    """The one-line ModelError for a failed weights-only torch.load of `path`.

    A refusal by the weights-only unpickler is reported as such (never quoting torch's advice to turn
    weights_only off); anything else as a damaged or foreign file, with torch's first line."""
    text = _ANSI.sub("", str(error))
    if "weights_only" in text or "WeightsUnpickler" in text:
        found = _UNSAFE_GLOBAL.search(text)
        opcode = _UNSAFE_OPCODE.search(text)
        instruction = _PICKLE_OPCODES.get(chr(int(opcode.group(1)))) if opcode else None
        if opcode and not found and (instruction is None or not _looks_like_pickle(path)):  # junk, not a hostile file
            return ModelError(f"{what} {path} is not a PyTorch file, or is corrupt (byte value {opcode.group(1)} is "
                              "not an instruction its loader reads)")
        holds = (f"the Python object {found.group(1)}" if found else
                 f"the pickle instruction {instruction}" if instruction else "objects other than tensors")
        return ModelError(
            f"{what} {path} was refused for safety: it holds objects that are not plain tensors ({holds}), and "
            "loading them could run code. Only tensors and plain containers are loaded; if you trust the file, "
            "re-save its weights as a state dict (or .safetensors) and pass that.")
    if isinstance(error, pickle.UnpicklingError):
        return ModelError(f"{what} {path} is not a PyTorch file, or is corrupt ({_ANSI.sub('', first_line(error))[:160]})")
    return ModelError(f"{what} {path} is not a PyTorch file, or is truncated or corrupt "
                      f"({type(error).__name__}: {_ANSI.sub('', first_line(error))[:160]})")


def _looks_like_pickle(path: str | os.PathLike) -> bool:
    """A zip archive (torch.save's format) or a file that opens with a pickle protocol 2-5 header."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return head == b"PK" or (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5)
