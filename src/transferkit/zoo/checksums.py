"""SHA-256 of weight files, remembered per (path, size, mtime) so a large file is hashed once."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import ModelError
from ..io import atomic_write_json
from .entry import ModelEntry

_CHUNK = 1 << 20


def transferkit_home() -> Path:
    """Root of everything transferkit keeps between runs: $TRANSFERKIT_HOME, else ~/.cache/transferkit."""
    home = os.environ.get("TRANSFERKIT_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "transferkit"


def _record_path(path: Path) -> Path:
    # One small record per hashed file, named after its absolute path: files inside installed
    # packages may sit in read-only folders, so the record cannot live beside them.
    key = hashlib.sha1(str(path).encode("utf-8")).hexdigest()
    return transferkit_home() / "verified" / f"{key}.json"


def file_sha256(path: str | os.PathLike, remember: bool = True) -> str:
    """Hex SHA-256 of a file; reuses the remembered digest while its size and mtime are unchanged.

    `remember=False` for temporary files (downloads in progress) that would only leave stale records.
    """
    path = Path(path).resolve()
    stat = path.stat()
    record = _record_path(path)
    if remember:
        try:
            known = json.loads(record.read_text(encoding="utf-8"))
            if (known["path"], known["size"], known["mtime_ns"]) == (str(path), stat.st_size, stat.st_mtime_ns):
                return known["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    hexdigest = digest.hexdigest()
    if remember:
        try:
            atomic_write_json(
                record, {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": hexdigest}
            )
        except OSError:
            pass  # an unwritable home only costs a re-hash next time
    return hexdigest


def check_digest(path: str | os.PathLike, entry: ModelEntry, remember: bool = True) -> str:
    """Refuse a file whose SHA-256 does not match the entry (full digest, or the file-name prefix).

    Returns the file's full digest. Entries without any known digest accept every file.
    """
    actual = file_sha256(path, remember=remember)
    expected = entry.expected_digest
    if expected is not None and not actual.startswith(expected):
        kind = "SHA-256" if len(expected) == 64 else f"SHA-256 prefix ({len(expected)} hex digits)"
        raise ModelError(
            f"weight file {path} for {entry.name!r} has the wrong checksum: expected {kind} {expected}, "
            f"actual SHA-256 {actual}. The file is corrupted or belongs to another model; "
            f"download it again{f' from {entry.url}' if entry.url else ''}."
        )
    return actual
