"""NeMo manifests: one JSON object per line with `audio_filepath`, `duration` (seconds) and `text`.

`audio_filepath` is absolute or relative to the manifest's own folder. An optional `offset` (seconds)
selects a stretch of a longer file, as NeMo allows. Items that cannot be used are skipped and named
as `"train.json:12: <reason> (<fix>)"`; nothing is dropped without a line saying so.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..errors import DataError, first_line
from ..io import atomic_write_text
from .io import UnreadableAudio, audio_duration
from .text import TextNorm, normalize

REQUIRED_KEYS = ("audio_filepath", "text")  # `duration` is measured from the file when absent


@dataclass(frozen=True)
class Utterance:
    audio: Path  # absolute
    duration: float  # seconds used from `offset` on
    text: str  # normalised
    line: int  # 1-based line in the manifest
    offset: float = 0.0


class _Skip(Exception):
    """One manifest line cannot be used: the reason and the fix."""

    def __init__(self, reason: str, fix: str):
        super().__init__(reason)
        self.reason, self.fix = reason, fix


def read_manifest(path: str | os.PathLike, *, norm: TextNorm, max_duration: float | None,
                  vocabulary: set[str] | None = None, check_audio: bool = True,
                  duration_tolerance: float = 0.5) -> tuple[list[Utterance], list[str]]:
    """The usable utterances of a NeMo manifest, and one "name:line: reason (fix)" string per skipped line.

    With `check_audio`, each file's header is read: missing or unreadable files and durations that differ
    from the file's by more than `duration_tolerance` seconds are skipped. `vocabulary` (characters; the
    space is always allowed) skips transcripts with other characters, naming them. A manifest that is
    missing, not UTF-8 text, empty or not JSON lines at all raises DataError; a manifest whose lines are
    all skipped returns ([], skipped) so the caller can say which split it was."""
    path = Path(path)
    lines = _read_lines(path)
    folder = Path(os.path.abspath(path.parent))
    utterances: list[Utterance] = []
    skipped: list[str] = []
    parsed_any = False
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            item = _parse_line(raw)
            parsed_any = True
            utterances.append(_utterance(item, number, folder, norm=norm, max_duration=max_duration,
                                         vocabulary=vocabulary, check_audio=check_audio,
                                         tolerance=duration_tolerance))
        except _Skip as skip:
            skipped.append(f"{path.name}:{number}: {skip.reason} ({skip.fix})")
    if not utterances and not skipped:
        raise DataError(f"manifest {path} has no items; it needs one JSON object per line with "
                        '"audio_filepath", "duration" and "text"')
    if not parsed_any:
        raise DataError(f"manifest {path} is not JSON lines ({skipped[0].split(': ', 1)[1]}); a NeMo manifest "
                        "has one JSON object per line; build one with `tkit speech_to_text dataset_convert`")
    return utterances, skipped


def _read_lines(path: Path) -> list[str]:
    if not path.exists():
        raise DataError(f"manifest {path} does not exist; check the path")
    if not path.is_file():
        raise DataError(f"manifest {path} is not a file; pass a JSON-lines manifest")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"manifest {path} is not UTF-8 text ({first_line(e)}); save it as UTF-8") from e
    except OSError as e:
        raise DataError(f"cannot read manifest {path} ({first_line(e)})") from e
    return text.splitlines()


def _parse_line(raw: str) -> dict[str, Any]:
    try:
        item = json.loads(raw)
    except ValueError as e:
        raise _Skip(f"bad JSON: {first_line(e)}", "write one JSON object per line") from None
    if not isinstance(item, dict):
        raise _Skip(f"a JSON {type(item).__name__}, not an object", "write one JSON object per line")
    return item


def _number(item: dict[str, Any], key: str) -> float | None:
    if key not in item:
        return None
    value = item[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Skip(f"{key} {value!r} is not a number of seconds", f"write {key} as a number")
    return float(value)


def _utterance(item: dict[str, Any], line: int, folder: Path, *, norm: TextNorm, max_duration: float | None,
               vocabulary: set[str] | None, check_audio: bool, tolerance: float) -> Utterance:
    for key in REQUIRED_KEYS:
        if key not in item:
            raise _Skip(f"missing key {key!r}", 'each line needs "audio_filepath", "duration" and "text"')
    if not isinstance(item["audio_filepath"], str) or not item["audio_filepath"].strip():
        raise _Skip("audio_filepath is not a path", "write the audio file's path as a string")
    if not isinstance(item["text"], str):
        raise _Skip(f"text {item['text']!r} is not a string", "write the transcript as a string")
    duration, offset = _number(item, "duration"), _number(item, "offset") or 0.0
    if duration is not None and duration <= 0:
        raise _Skip(f"duration {duration:g} s is not positive", "write the clip's length in seconds")
    if offset < 0:
        raise _Skip(f"offset {offset:g} s is negative", "write the start in seconds from the file's beginning")
    audio = Path(os.path.abspath(folder / os.path.expanduser(item["audio_filepath"])))

    if check_audio:
        if not audio.is_file():
            written = item["audio_filepath"]
            where = "" if os.path.isabs(written) else f"; relative paths are read from the manifest's folder {folder}"
            raise _Skip(f"audio file {written} not found", f"fix audio_filepath{where}")
        try:
            measured = audio_duration(audio)
        except UnreadableAudio as e:
            raise _Skip(f"unreadable audio file {item['audio_filepath']}: {e.reason}",
                        "convert it to WAV or FLAC, or remove the line") from None
        available = measured - offset
        if duration is None:
            duration = available
        # Without an offset the item is the whole file; with one, a stretch that must fit inside it.
        elif duration - available > tolerance or ("offset" not in item and abs(duration - measured) > tolerance):
            raise _Skip(f"duration {duration:.2f} s disagrees with the file's {available:.2f} s",
                        "fix duration, or rebuild the manifest with dataset_convert")
        if duration <= 0:
            raise _Skip(f"offset {offset:g} s is past the end of the {measured:.2f} s file", "fix offset")
    elif duration is None:
        raise _Skip("missing key 'duration'", "write the clip's length in seconds, or let the files be checked")

    text = normalize(item["text"], norm)
    if not text:
        raise _Skip("empty text after normalisation", "write the transcript, or remove the line")
    if vocabulary is not None:
        outside = sorted(set(text) - set(vocabulary) - {" "})
        if outside:
            shown = " ".join(repr(ch) for ch in outside[:10]) + (" ..." if len(outside) > 10 else "")
            raise _Skip(f"characters outside the vocabulary: {shown}",
                        "change the transcript or the normalisation, or let the vocabulary grow")
    if max_duration is not None and duration > max_duration:
        raise _Skip(f"{duration:.2f} s is longer than max_duration={max_duration:g} s",
                    "cut the recording, or raise data.max_duration")
    return Utterance(audio=audio, duration=float(duration), text=text, line=line, offset=offset)


def manifest_row(utterance: Utterance, folder: str | os.PathLike | None = None) -> dict[str, Any]:
    """The JSON object of one utterance; its path is written relative to `folder` when the file lies inside it."""
    audio = str(utterance.audio)
    if folder is not None:
        relative = os.path.relpath(utterance.audio, os.path.abspath(folder))
        if not relative.startswith(".."):
            audio = Path(relative).as_posix()
    row: dict[str, Any] = {"audio_filepath": audio, "duration": round(utterance.duration, 4),
                           "text": utterance.text}
    if utterance.offset:
        row["offset"] = round(utterance.offset, 4)
    return row


def write_manifest(path: str | os.PathLike, rows: Iterable[Utterance | dict[str, Any]]) -> Path:
    """Write a NeMo manifest atomically: Utterances (paths inside the manifest's folder written relative to it)
    or ready JSON objects, one per line, UTF-8 with non-ASCII characters as they are."""
    path = Path(path)
    lines = []
    for row in rows:
        obj = manifest_row(row, path.parent) if isinstance(row, Utterance) else row
        lines.append(json.dumps(obj, ensure_ascii=False, allow_nan=False))
    return atomic_write_text(path, "".join(line + "\n" for line in lines))
