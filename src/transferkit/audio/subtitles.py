"""SubRip (.srt) subtitles from timed transcript segments."""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Sequence

from ..io import atomic_write_text


def format_timestamp(seconds: float, separator: str = ",") -> str:
    """`HH:MM:SS,mmm` (SRT; `separator="."` gives WebVTT's form), rounded to the millisecond."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a timestamp must be a finite number of seconds >= 0, got {seconds}")
    millis = int(round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def srt_text(segments: Sequence[tuple[float, float, str]]) -> str:
    """The SRT document for (start, end, text) segments, numbered from 1. Segments with no text after
    trimming make no cue (an empty cue would end the block early); blank lines inside a text are removed."""
    cues = []
    for start, end, text in segments:
        if end < start:
            raise ValueError(f"segment ends before it starts: {start} -> {end}")
        lines = [line.strip() for line in str(text).splitlines() if line.strip()]
        if lines:
            cues.append(f"{len(cues) + 1}\n{format_timestamp(start)} --> {format_timestamp(end)}\n"
                        + "\n".join(lines) + "\n")
    return "\n".join(cues)


_CUE_TIMES = re.compile(r"(\d+):(\d\d):(\d\d)[,.](\d{3})\s*-->\s*(\d+):(\d\d):(\d\d)[,.](\d{3})")


def read_srt(path: str | os.PathLike) -> list[tuple[float, float, str]]:
    """The (start, end, text) cues of an SRT file, in file order (multi-line texts joined by newlines)."""
    cues = []
    for block in re.split(r"\n\s*\n", Path(path).read_text(encoding="utf-8-sig").replace("\r\n", "\n")):
        lines = block.strip().splitlines()
        for i, line in enumerate(lines[:2]):
            match = _CUE_TIMES.search(line)
            if match:
                g = [int(x) for x in match.groups()]
                start = g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000
                end = g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000
                cues.append((start, end, "\n".join(lines[i + 1:])))
                break
    return cues


def write_srt(path: str | os.PathLike, segments: Sequence[tuple[float, float, str]]) -> Path:
    """Write `segments` as an SRT file atomically (UTF-8)."""
    return atomic_write_text(path, srt_text(segments))
