"""Fonts for text drawn into PNG pictures: class names on annotated images, confusion matrices, PR curves.

Pillow's default font and matplotlib's DejaVu Sans have no CJK glyphs, so a class named 猫 would show as
empty boxes. Text a default font cannot show is drawn with the first installed font that has every one
of its characters (the fonts fontconfig and matplotlib know: system fonts and matplotlib's own). When no
installed font has them, a warning says so once per new set of characters, with the fix: install a font
that has them (e.g. Noto Sans CJK, `apt install fonts-noto-cjk`).
"""
from __future__ import annotations

import io
import logging
import os
import threading
import warnings
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterable, Iterator

log = logging.getLogger("transferkit")

# Fonts that map every code point to a placeholder picture: covering a character is not showing it.
_PLACEHOLDER_FONTS = ("lastresort",)
_warned: set[str] = set()
_warned_lock = threading.Lock()


def _needed(texts: Iterable[str]) -> set[int]:
    return {ord(c) for text in texts for c in text if not c.isspace() and c.isprintable()}


@lru_cache(maxsize=None)
def _charmap(source: str | bytes) -> frozenset[int]:
    """Code points a font file (path, or the font's bytes) has glyphs for; empty when it cannot be read."""
    from fontTools.ttLib import TTFont

    try:
        with TTFont(io.BytesIO(source) if isinstance(source, bytes) else source, fontNumber=0, lazy=True) as font:
            return frozenset(font.getBestCmap() or {})
    except Exception:  # a broken or unsupported font file simply has no glyphs for us
        return frozenset()


@lru_cache(maxsize=1)
def _font_files() -> tuple[str, ...]:
    """Installed font files to fall back on: matplotlib's DejaVu Sans first, then every system font."""
    from matplotlib import font_manager

    files = [os.fspath(font_manager.findfont("DejaVu Sans", fallback_to_default=True))]
    try:
        files += sorted(map(os.fspath, font_manager.findSystemFonts()))
    except Exception:  # no font folders, no fc-list: only matplotlib's own fonts
        pass
    files += sorted(os.fspath(f.fname) for f in font_manager.fontManager.ttflist)
    unique = dict.fromkeys(f for f in files if not any(p in f.lower() for p in _PLACEHOLDER_FONTS))
    return tuple(unique)


def font_file_for(texts: Iterable[str]) -> str | None:
    """The first installed font file that has a glyph for every character of `texts`; None when none has."""
    needed = _needed(texts)
    return next((f for f in _font_files() if needed <= _charmap(f)), None)


def warn_missing(texts: Iterable[str], covered: frozenset[int] = frozenset()) -> None:
    """Say once per new set of characters that no installed font can draw them."""
    missing = "".join(sorted(chr(c) for c in _needed(texts) - covered))
    with _warned_lock:
        new = "".join(c for c in missing if c not in _warned)
        _warned.update(new)
    if new:
        log.warning("no installed font has the characters %s (in class names): PNG pictures show them as empty "
                    "boxes. Install a font that has them, e.g. Noto Sans CJK (apt install fonts-noto-cjk)", new)


@lru_cache(maxsize=64)
def _pil_default(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable when Pillow has FreeType (>= 10.1)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


@lru_cache(maxsize=64)
def _pil_truetype(path: str, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(path, size)


def _pil_default_charmap(font) -> frozenset[int]:
    data = getattr(font, "font_bytes", None)
    if data:
        return _charmap(bytes(data))
    return frozenset(range(32, 127))  # Pillow's bitmap font: printable ASCII


def pil_font(size: int, text: str):
    """A Pillow font of `size` pixels that can draw `text`: Pillow's default when it has every character,
    else the first installed font that has; else the default (and a warning, once)."""
    default = _pil_default(size)
    covered = _pil_default_charmap(default)
    if _needed([text]) <= covered:
        return default
    path = font_file_for([text])
    if path is not None:
        try:
            return _pil_truetype(path, size)
        except OSError:
            pass
    warn_missing([text], covered)
    return default


@contextmanager
def matplotlib_text(texts: Iterable[str]) -> Iterator[None]:
    """Inside: matplotlib falls back to an installed font that has the characters of `texts` that its
    default font lacks, and warns once (not once per glyph) when none has them."""
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    texts = list(texts)
    default = font_manager.findfont(font_manager.FontProperties(family=plt.rcParams["font.family"]))
    covered = _charmap(os.fspath(default))
    rc: dict = {}
    if not _needed(texts) <= covered:
        missing = ["".join(chr(c) for c in sorted(_needed(texts) - covered))]
        path = font_file_for(missing)
        if path is None:
            warn_missing(texts, covered)
        else:
            font_manager.fontManager.addfont(path)
            name = font_manager.FontProperties(fname=path).get_name()
            rc = {"font.family": [*plt.rcParams["font.family"], name]}
    with warnings.catch_warnings(), plt.rc_context(rc):
        warnings.filterwarnings("ignore", message="Glyph .* missing from", category=UserWarning)
        yield
