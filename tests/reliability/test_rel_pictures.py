"""Pictures in and out. In: data.max_image_pixels is the only size limit (Pillow's own decompression-bomb
limit, 179 million pixels, gives way to it), and a refusal names that key. Out: class names in any script
are drawn with a font that has their characters; when no installed font has them, one warning says so
(not one matplotlib warning per glyph).

The large image is a PNG whose header claims 20000 x 10000 pixels over a few bytes of pixel data: enough
for every size check, and it never decodes into 200 million pixels."""
from __future__ import annotations

import logging
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rel_helpers import FAST, read_json

from transferkit.vision.images import ImageError, image_size, load_image, open_checked

WIDTH, HEIGHT = 20000, 10000  # 200 million pixels: above Pillow's hard limit (2 x 89,478,485)


def _png_claiming(path: Path, width: int, height: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


def test_a_refusal_of_a_huge_image_names_the_key(tmp_path):
    path = _png_claiming(tmp_path / "huge.png", WIDTH, HEIGHT)
    with pytest.raises(ImageError, match=r"200,000,000 pixels.*raise data\.max_image_pixels"):
        load_image(path)


def test_max_image_pixels_above_pillows_limit_is_honoured(tmp_path):
    path = _png_claiming(tmp_path / "huge.png", WIDTH, HEIGHT)
    assert image_size(path) == (WIDTH, HEIGHT)  # header reads (detection and mask pairing) work at any size
    with open_checked(path, max_pixels=300_000_000) as im:
        assert im.size == (WIDTH, HEIGHT)
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's limit is back for everyone else


def test_inference_skips_by_the_spec_limit_alone(trained, tmp_path, tkit):
    images = tmp_path / "images"
    images.mkdir()
    _png_claiming(images / "huge.png", WIDTH, HEIGHT)
    Image.new("RGB", (32, 32), (90, 90, 90)).save(images / "small.png")
    reasons = {}
    for limit in (None, 300_000_000):
        out = tmp_path / f"inf_{limit}"
        setting = [f"data.max_image_pixels={limit}"] if limit else []
        result = tkit("inference", "-r", out, "-m", trained / "best.ckpt", f"inference.images={images}", *FAST, *setting)
        assert result.rc == 0, result.err
        (reasons[limit],) = read_json(out / "inference.json")["skipped_images"]["files"].values()
    assert "data.max_image_pixels" in reasons[None]
    assert "truncated or corrupt" in reasons[300_000_000]  # allowed through; only its missing pixels stop it


# -- class names in pictures ---------------------------------------------------------------------------

NAMES = ["猫", "犬"]


def _cjk_test_font(path: Path) -> Path:
    """A TrueType font whose only glyphs, for 猫 and 犬, are filled squares."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    def glyph(filled: bool):
        pen = TTGlyphPen(None)
        if filled:
            pen.moveTo((50, 0))
            pen.lineTo((50, 700))
            pen.lineTo((650, 700))
            pen.lineTo((650, 0))
            pen.closePath()
        return pen.glyph()

    order = [".notdef", "space", "cat", "dog"]
    builder = FontBuilder(1000, isTTF=True)
    builder.setupGlyphOrder(order)
    builder.setupCharacterMap({0x20: "space", ord(NAMES[0]): "cat", ord(NAMES[1]): "dog"})
    builder.setupGlyf({".notdef": glyph(False), "space": glyph(False), "cat": glyph(True), "dog": glyph(True)})
    builder.setupHorizontalMetrics({name: (700, 50) for name in order})
    builder.setupHorizontalHeader(ascent=800, descent=-200)
    builder.setupNameTable({"familyName": "TransferkitTestCJK", "styleName": "Regular"})
    builder.setupOS2(sTypoAscender=800, usWinAscent=800, usWinDescent=200)
    builder.setupPost()
    builder.save(str(path))
    return path


@pytest.fixture
def installed_fonts(monkeypatch):
    """installed_fonts(*files): the fonts transferkit may fall back on, for this test."""
    from transferkit.metrics import fonts

    monkeypatch.setattr(fonts, "_warned", set())

    def install(*files: Path) -> None:
        monkeypatch.setattr(fonts, "_font_files", lambda: tuple(map(str, files)))
    return install


@pytest.fixture
def warnings_logged():
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("transferkit")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def _ink(picture: Image.Image) -> int:
    return int((np.asarray(picture.convert("L")) > 100).sum())


def test_a_cjk_class_name_is_drawn_with_a_font_that_has_it(installed_fonts, tmp_path, warnings_logged):
    from transferkit.metrics.plots import save_confusion_png
    from transferkit.tasks.classification.viz import draw_caption
    from transferkit.vision.draw import draw_boxes

    installed_fonts(_cjk_test_font(tmp_path / "cjk.ttf"))
    caption = draw_caption(Image.new("RGB", (60, 20)), NAMES[0])
    assert _ink(caption) >= 30  # a filled square about 6 x 7 pixels, not an empty box or nothing
    def tagged() -> np.ndarray:
        return np.asarray(draw_boxes(Image.new("RGB", (200, 200)), [[60, 60, 140, 140]], [0], NAMES).convert("L"))

    with_font = tagged()
    installed_fonts()  # none: the default font has no such glyph
    assert (np.abs(with_font.astype(int) - tagged()) > 100).sum() >= 20  # the tag shows a different picture
    installed_fonts(tmp_path / "cjk.ttf")
    warnings_logged.clear()  # the warning the fontless drawing gave
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save_confusion_png(np.eye(2, dtype=int), NAMES, tmp_path / "cm.png")
    assert not [w for w in caught if "missing from" in str(w.message)]
    assert not warnings_logged


def test_without_a_font_that_has_them_one_warning_says_so(installed_fonts, tmp_path, warnings_logged):
    from transferkit.metrics.plots import save_confusion_png
    from transferkit.tasks.classification.viz import draw_caption

    installed_fonts()  # none
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            save_confusion_png(np.eye(2, dtype=int), NAMES, tmp_path / "cm.png")
            draw_caption(Image.new("RGB", (60, 20)), NAMES[0])
    assert not [w for w in caught if "missing from" in str(w.message)]  # matplotlib's one per glyph
    (record,) = warnings_logged
    message = record.getMessage()
    assert all(name in message for name in NAMES) and "font" in message and "fonts-noto-cjk" in message
