"""Atomic writes and safe loads: a crash mid-write never leaves a half-written file behind."""
from __future__ import annotations

import errno
import json
import math
import numbers
import os
import pickle
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .errors import DiskFullError, ModelError, first_line

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


# What a write that ran out of space raises: OSError ENOSPC / EDQUOT, or (torch's zip writer, safetensors,
# protobuf) another exception whose message says so. torch's writer does not report the short write
# itself: it fails its next position check ("unexpected pos N vs M") or says "file write failed".
_NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_NO_SPACE_TEXT = ("no space left on device", "disk quota exceeded", "os error 28", "storagefull")
_SHORT_WRITE_TEXT = ("unexpected pos", "file write failed")


def is_disk_full(error: BaseException, folder: str | os.PathLike | None = None, needed: int | None = None) -> bool:
    """Whether `error` (or an error it was raised from) means a write ran out of disk space or quota.

    torch's short-write messages count only when `folder`'s file system has less than `needed` bytes
    (or, when that is unknown, less than 16 MiB) free: they are short writes, and full disks cause them."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _NO_SPACE_ERRNOS:
            return True
        text = str(error).lower()
        if any(t in text for t in _NO_SPACE_TEXT):
            return True
        if folder is not None and any(t in text for t in _SHORT_WRITE_TEXT):
            free = _free_bytes(folder)
            return free is not None and free < (needed if needed is not None else 16 * 2**20)
        error = error.__cause__ or error.__context__
    return False


def disk_full_error(path: str | os.PathLike | None, error: BaseException | None, needed: int | None = None,
                    written: int | None = None) -> DiskFullError:
    """The one-line DiskFullError for a write of `path` (a file, or the folder it went into, when only that is
    known) that ran out of space; `needed`/`written`: bytes, if known."""
    what = "disk quota exceeded" if error is not None and _over_quota(error) else "no space left on device"
    folder = path is not None and Path(path).is_dir()
    where = f" writing {'into ' if folder else ''}{path}" if path else ""
    facts = []
    if needed:
        facts.append(f"about {_mb(needed)} needed")
    elif written:
        facts.append(f"{_mb(written)} written before it filled")
    free = _free_bytes(path if folder else Path(path).parent) if path else None
    if free is not None:
        facts.append(f"{_mb(free)} free there")
    detail = f" ({', '.join(facts)})" if facts else ""
    return DiskFullError(f"{what}{where}{detail}; free some space, or write the results to another disk with -r DIR")


def _over_quota(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno == errno.EDQUOT or "quota" in str(error).lower()


def _free_bytes(folder: str | os.PathLike) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _atomic(path: str | os.PathLike, write: Callable[[Path], None], needed: int | None = None) -> Path:
    """Write via `write(tmp_path)` to a temp file in the same folder, fsync, then rename over `path`.

    On any failure the temp file is removed and `path` is left as it was; a full disk becomes a
    DiskFullError naming `path` (`needed`: the bytes the file will take, when the caller knows)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _sweep_once(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        if is_disk_full(e):
            raise disk_full_error(path, e, needed) from e
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    full: BaseException | None = None
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp_path, path)
    except BaseException as e:
        written = _file_size(tmp_path)
        tmp_path.unlink(missing_ok=True)
        # a disk that filled has less free than the whole file needs (a known size, else what got written)
        limit = needed if needed is not None else written + 2**20
        if not (isinstance(e, Exception) and not isinstance(e, DiskFullError) and is_disk_full(e, path.parent, limit)):
            raise
        full = OSError(errno.EDQUOT if _over_quota(e) else errno.ENOSPC, "")
    if full is not None:
        # Raised here, once the failed write's exception is gone: torch's zip writer lives on in its traceback
        # with the deleted temp file still open, and its space counts as used until that file is closed.
        raise disk_full_error(path, full, needed, written)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return _atomic(path, lambda p: p.write_bytes(data), len(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    data = text.encode("utf-8")
    return _atomic(path, lambda p: p.write_bytes(data), len(data))


def strict_json(obj: Any) -> Any:
    """`obj` with every NaN or infinite number replaced by None (JSON null), numpy numbers made plain.

    JSON has no NaN or Infinity; Python's json module writes them anyway, and strict parsers
    (JavaScript's JSON.parse, jq, most other languages) refuse the whole file."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, (bool, str)) or obj is None:
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        value = float(obj)
        return value if math.isfinite(value) else None
    return obj


def json_text(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text of `obj` (non-finite numbers as null; other unknown objects as their str)."""
    return json.dumps(strict_json(obj), indent=indent, default=str, allow_nan=False)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json_text(obj) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    import torch

    return _atomic(path, lambda p: torch.save(obj, p), _tensor_bytes(obj))


def _tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) checkpoint dict: about what torch.save will write."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def safe_torch_load(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """torch.load with weights_only=True; every failure becomes a one-line ModelError."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{what} {path} does not exist: pass an existing file with -m")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", _ANSI.sub("", str(e)))
        if found is None:
            raise ModelError(f"{what} {path} is not a PyTorch file, or is corrupt "
                             f"({_ANSI.sub('', first_line(e))[:160]})") from None
        raise ModelError(
            f"{what} {path} was refused: it holds the Python object {found.group(1)}, and loading it could run "
            "code. Only tensors and plain containers are loaded; re-save the weights as a state dict."
        ) from None
    except Exception as e:  # torch raises many types for damaged archives
        raise ModelError(f"{what} {path} is not a PyTorch file, or is truncated or corrupt "
                         f"({type(e).__name__}: {_ANSI.sub('', first_line(e))[:160]})") from None
