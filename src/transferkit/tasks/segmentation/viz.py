"""Masks as pictures: palette PNGs of class ids (what inference writes) and colour overlays."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from ...io import atomic_write_bytes
from ...vision.draw import IGNORE_COLOUR, class_colour


def palette(ignore_index: int | None = None) -> list[int]:
    """A 256-entry PNG palette: class i gets class_colour(i), the ignore id grey."""
    colours = [class_colour(i) for i in range(256)]
    if ignore_index is not None and 0 <= ignore_index < 256:
        colours[ignore_index] = IGNORE_COLOUR
    return [v for rgb in colours for v in rgb]


def colour_mask(ids: np.ndarray, ignore_index: int | None = None) -> Image.Image:
    """[H, W] class ids -> a palette ("P") image whose pixel values are the ids and whose colours show them."""
    if ids.min(initial=0) < 0 or ids.max(initial=0) > 255:
        raise ValueError("a palette mask holds ids 0..255")
    image = Image.fromarray(ids.astype(np.uint8), mode="P")
    image.putpalette(palette(ignore_index))
    return image


def write_mask_png(ids: np.ndarray, path: Path, ignore_index: int | None = None) -> Path:
    """Class ids as a palette PNG: tools read the ids as pixel values, viewers show the colours."""
    buf = io.BytesIO()
    colour_mask(ids, ignore_index).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def overlay(image: Image.Image, ids: np.ndarray, ignore_index: int | None = None, alpha: float = 0.5) -> Image.Image:
    """The image with its mask's colours blended in (same size as the image)."""
    mask = colour_mask(ids, ignore_index).convert("RGB").resize(image.size, Image.NEAREST)
    return Image.blend(image.convert("RGB"), mask, alpha)
