"""Building NeMo manifests from what users have: a folder of audio files with transcripts, or a CSV.

Transcripts in a folder come from, in this order: a same-stem text file beside the audio (`a.wav` +
`a.txt`), or a row of a transcript table anywhere under the folder: `transcripts.txt` or any `*.tsv`,
"key<TAB>text" per line, where the key is the audio file's stem, or its path relative to the table's folder
(with or without the extension). Durations are read from each file's header. Paths in the manifest are
written relative to the manifest's folder when the audio lies inside it, else absolute. Transcripts are
written as found; normalisation happens when a manifest is read for training or scoring.
"""
from __future__ import annotations

import csv
import io
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..errors import DataError, first_line
from .io import AUDIO_EXTENSIONS, UnreadableAudio, audio_duration
from .manifest import write_manifest

TABLE_NAMES = ("transcripts.txt",)
TABLE_SUFFIX = ".tsv"


def _audio_row(audio: Path, text: str, out_folder: Path) -> dict[str, Any]:
    relative = os.path.relpath(audio, out_folder)
    path = Path(relative).as_posix() if not relative.startswith("..") else str(audio)
    return {"audio_filepath": path, "duration": round(audio_duration(audio), 4), "text": text}


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({first_line(e)}); save it as UTF-8") from e


def _tables(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and (p.name in TABLE_NAMES or p.suffix == TABLE_SUFFIX))


def manifest_from_folder(directory: str | os.PathLike, out: str | os.PathLike, *, transcript_ext: str = ".txt"
                         ) -> tuple[int, list[str]]:
    """Write a manifest for the audio files under `directory` that have a transcript; returns (rows written,
    skipped) where skipped names each audio file or table line left out and why. DataError when no row
    could be made (nothing is written then)."""
    root, out = Path(directory), Path(out)
    if not root.is_dir():
        raise DataError(f"audio folder {root} does not exist or is not a folder")
    ext = transcript_ext if transcript_ext.startswith(".") else "." + transcript_ext
    audio_files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if not audio_files:
        raise DataError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {root}")
    skipped: list[str] = []

    from_tables: dict[Path, tuple[str, str]] = {}  # audio -> (text, "table:line")
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for audio in audio_files:
        by_stem[audio.stem].append(audio)
    for table in _tables(root):
        for number, line in enumerate(_read_text(table).splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{table.relative_to(root).as_posix()}:{number}"
            key, tab, text = line.partition("\t")
            if not tab:
                skipped.append(f"{where}: no TAB between the key and the transcript (write \"stem<TAB>text\")")
                continue
            matches = _table_matches(key.strip(), table.parent, by_stem)
            if len(matches) != 1:
                reason = "no audio file" if not matches else f"{len(matches)} audio files"
                skipped.append(f"{where}: {reason} for key {key.strip()!r} (use the file's path relative to "
                               f"{table.parent.relative_to(root).as_posix() or '.'})")
                continue
            if matches[0] in from_tables:
                skipped.append(f"{where}: a second transcript for {matches[0].relative_to(root).as_posix()} "
                               f"(first at {from_tables[matches[0]][1]}; keep one)")
                continue
            from_tables[matches[0]] = (text.strip(), where)

    rows: list[dict[str, Any]] = []
    out_folder = Path(os.path.abspath(out.parent))
    for audio in audio_files:
        name = audio.relative_to(root).as_posix()
        beside = audio.with_suffix(ext)
        if beside.is_file():
            text = " ".join(_read_text(beside).split())
            if audio in from_tables:
                skipped.append(f"{from_tables[audio][1]}: not used, {beside.name} beside {name} is (keep one)")
        elif audio in from_tables:
            text = from_tables[audio][0]
        else:
            skipped.append(f"{name}: no transcript (add {beside.name} beside it, or a line in transcripts.txt)")
            continue
        if not text:
            skipped.append(f"{name}: empty transcript (write the words spoken, or remove the file)")
            continue
        try:
            rows.append(_audio_row(Path(os.path.abspath(audio)), text, out_folder))
        except UnreadableAudio as e:
            skipped.append(f"{name}: unreadable audio ({e.reason}; convert it to WAV or FLAC)")
    return _finish(out, rows, skipped, f"the audio files under {root}")


def _table_matches(key: str, folder: Path, by_stem: dict[str, list[Path]]) -> list[Path]:
    """Audio files a table key names: the exact file, else files with that path minus extension, else
    (a bare stem) files with that stem anywhere under the table's folder."""
    exact = folder / key
    if key and exact.is_file() and exact.suffix.lower() in AUDIO_EXTENSIONS:
        return [exact]
    candidates = by_stem.get(Path(key).name, [])
    same_path = [a for a in candidates if a.with_suffix("") == exact]
    if same_path or "/" in key:
        return same_path
    return [a for a in candidates if folder in a.parents]


def manifest_from_csv(csv_path: str | os.PathLike, out: str | os.PathLike) -> tuple[int, list[str]]:
    """Write a manifest from a CSV with a `path,text` header (paths absolute or relative to the CSV's folder);
    returns (rows written, skipped) with each skipped row named "file.csv:LINE: reason (fix)"."""
    csv_path, out = Path(csv_path), Path(out)
    if not csv_path.is_file():
        raise DataError(f"CSV file {csv_path} does not exist")
    text = _read_text(csv_path)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if "path" not in header or "text" not in header:
        found = ",".join(header) or "none"
        raise DataError(f"{csv_path} needs a header row with the columns path,text (found {found})")
    reader.fieldnames = header
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    folder = Path(os.path.abspath(csv_path.parent))
    out_folder = Path(os.path.abspath(out.parent))
    for record in reader:
        where = f"{csv_path.name}:{reader.line_num}"  # the record's last line (its only one unless quoted)
        path, spoken = (record.get("path") or "").strip(), " ".join((record.get("text") or "").split())
        if not path:
            skipped.append(f"{where}: no path (write the audio file's path in the path column)")
            continue
        if not spoken:
            skipped.append(f"{where}: empty text (write the words spoken, or remove the row)")
            continue
        audio = Path(os.path.abspath(folder / os.path.expanduser(path)))
        if not audio.is_file():
            skipped.append(f"{where}: audio file {path} not found (relative paths are read from {folder})")
            continue
        try:
            rows.append(_audio_row(audio, spoken, out_folder))
        except UnreadableAudio as e:
            skipped.append(f"{where}: unreadable audio {path} ({e.reason}; convert it to WAV or FLAC)")
    return _finish(out, rows, skipped, f"the rows of {csv_path}")


def _finish(out: Path, rows: list[dict[str, Any]], skipped: list[str], source: str) -> tuple[int, list[str]]:
    if not rows:
        first = f"; first problem: {skipped[0]}" if skipped else ""
        raise DataError(f"no manifest row could be made from {source} ({len(skipped)} skipped){first}")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(out, rows)
    return len(rows), skipped
