"""Atomic writes and safe loads: a crash mid-write never leaves a half-written file behind."""
from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

from .errors import ModelError, first_line

_ANSI = re.compile(r"\x1b\[[0-9;]*m")

_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write via `write(tmp_path)` to a temp file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
