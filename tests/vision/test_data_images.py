"""load_image / image_size / list_images: every odd file a user might have, built at test time."""
from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from transferkit.vision.images import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    ImageError,
    image_size,
    list_images,
    load_image,
)
from transferkit.errors import DataError


def _jpeg_bytes(im: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, format="JPEG", quality=95, **save)
    return buffer.getvalue()


def _noise_rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _corner_marked(width: int = 40, height: int = 20) -> Image.Image:
    """Grey image with a pure red block in its stored top-left corner."""
    pixels = np.full((height, width, 3), 128, np.uint8)
    pixels[:6, :6] = (255, 0, 0)
    return Image.fromarray(pixels)


def _exif_with_orientation(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _set_png_size(png: bytes, width: int, height: int) -> bytes:
    """Rewrite the IHDR width/height (and its CRC) of a PNG without touching the pixel data."""
    assert png[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + png[24:29]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return png[:16] + ihdr + crc + png[33:]


def _png_bytes(im: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, format="PNG", **save)
    return buffer.getvalue()


# --- files that load ----------------------------------------------------------------------------

def test_rgb_jpeg_loads_fully_decoded_as_rgb(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(_jpeg_bytes(_noise_rgb(30, 20)))
    im = load_image(path)
    assert im.mode == "RGB" and im.size == (30, 20)
    assert im.im is not None  # decoded, not a lazy handle on a closed file


def test_png_named_jpg_loads_by_content(tmp_path):
    path = tmp_path / "actually_png.jpg"
    source = _noise_rgb(16, 12)
    path.write_bytes(_png_bytes(source))
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(source))


def test_non_ascii_file_name_loads(tmp_path):
    path = tmp_path / "фото_猫_café.png"
    _noise_rgb(10, 10).save(path)
    assert load_image(path).size == (10, 10)
    assert image_size(path) == (10, 10)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16), "L").save(path)
    pixels = np.asarray(load_image(path))
    assert pixels.shape == (16, 16, 3)
    assert pixels[0, 5].tolist() == [5, 5, 5] and pixels[15, 15].tolist() == [255, 255, 255]


def test_one_bit_image_becomes_black_and_white(tmp_path):
    path = tmp_path / "bits.png"
    bits = Image.new("1", (8, 4), 0)
    bits.putpixel((3, 1), 1)
    bits.save(path)
    pixels = np.asarray(load_image(path))
    assert pixels[1, 3].tolist() == [255, 255, 255] and pixels[0, 0].tolist() == [0, 0, 0]


def test_rgba_transparent_pixels_are_composited_on_white(tmp_path):
    path = tmp_path / "rgba.png"
    pixels = np.zeros((4, 4, 4), np.uint8)
    pixels[0, 0] = (255, 0, 0, 255)  # opaque red
    pixels[0, 1] = (0, 0, 0, 0)  # fully transparent black
    pixels[0, 2] = (0, 0, 0, 128)  # half-transparent black
    Image.fromarray(pixels, "RGBA").save(path)
    rgb = np.asarray(load_image(path))
    assert rgb[0, 0].tolist() == [255, 0, 0]
    assert rgb[0, 1].tolist() == [255, 255, 255]
    assert all(abs(v - 127) <= 1 for v in rgb[0, 2].tolist())


def test_gray_with_alpha_is_composited_on_white(tmp_path):
    path = tmp_path / "la.png"
    Image.merge("LA", [Image.new("L", (3, 3), 0), Image.new("L", (3, 3), 0)]).save(path)
    assert np.asarray(load_image(path))[1, 1].tolist() == [255, 255, 255]


def test_palette_with_transparent_index_is_composited_on_white(tmp_path):
    path = tmp_path / "palette.png"
    im = Image.new("P", (4, 4), 0)
    im.putpalette([0, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))  # index 0 black, 1 green
    im.putpixel((2, 2), 1)
    im.save(path, transparency=0)
    with Image.open(path) as check:
        assert check.mode == "P" and "transparency" in check.info
    rgb = np.asarray(load_image(path))
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[2, 2].tolist() == [0, 255, 0]


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "depth16.png"
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    assert np.asarray(load_image(path))[0, :, 0].tolist() == [0, 1, 128, 255]


def test_float_image_in_unit_range_is_scaled_to_255(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F").save(path)
    assert np.asarray(load_image(path))[0, :, 0].tolist() == [0, 128, 255]


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    path.write_bytes(_jpeg_bytes(Image.new("CMYK", (8, 8), (0, 255, 255, 0))))  # pure red in CMYK
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    r, g, b = np.asarray(load_image(path))[4, 4].tolist()
    assert r > 200 and g < 60 and b < 60


def test_exif_rotated_jpeg_is_returned_upright(tmp_path):
    path = tmp_path / "rotated.jpg"
    # Orientation 6: the camera was turned 90 degrees clockwise; the viewer rotates the stored
    # pixels 90 degrees clockwise, so the stored top-left corner ends up top-right.
    path.write_bytes(_jpeg_bytes(_corner_marked(40, 20), exif=_exif_with_orientation(6)))
    im = load_image(path)
    assert im.size == (20, 40)
    assert image_size(path) == (20, 40)
    pixels = np.asarray(im).astype(int)
    assert pixels[2, 17, 0] > 200 and pixels[2, 17, 1] < 60  # red now near the top-right
    assert pixels[2, 2, 0] < 180  # and no longer top-left


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow_exif_transpose(tmp_path, orientation):
    path = tmp_path / f"o{orientation}.jpg"
    path.write_bytes(_jpeg_bytes(_corner_marked(24, 10), exif=_exif_with_orientation(orientation)))
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert np.array_equal(np.asarray(load_image(path)), expected)
    assert image_size(path) == (expected.shape[1], expected.shape[0])


def test_exif_orientation_in_png_is_applied_by_load_and_size(tmp_path):
    path = tmp_path / "rotated.png"
    _corner_marked(40, 20).save(path, exif=_exif_with_orientation(8))
    assert load_image(path).size == (20, 40)
    assert image_size(path) == (20, 40)


def test_image_size_reads_header_only(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(_set_png_size(_png_bytes(Image.new("L", (4, 4))), 15000, 9000))
    assert image_size(path) == (15000, 9000)  # the pixel data is not even there


# --- files that are refused ---------------------------------------------------------------------

def test_zero_byte_file_is_refused_with_reason(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty.jpg.*empty \(0 bytes\)"):
        load_image(path)
    with pytest.raises(ImageError, match="0 bytes"):
        image_size(path)


def test_truncated_jpeg_is_detected_not_padded(tmp_path):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    path = tmp_path / "cut.jpg"
    data = _jpeg_bytes(_noise_rgb(64, 64))
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut.jpg.*truncated"):
        load_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_png_is_detected(tmp_path):
    path = tmp_path / "cut.png"
    data = _png_bytes(_noise_rgb(64, 64))
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(path)


def test_text_file_named_jpg_is_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageError, match=r"notes.jpg: not an image"):
        load_image(path)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "gone.png")


def test_image_over_max_pixels_is_refused_from_the_header(tmp_path):
    path = tmp_path / "small.png"
    _noise_rgb(20, 10).save(path)
    with pytest.raises(ImageError, match=r"20x10 = 200 pixels, more than the limit of 100"):
        load_image(path, max_pixels=100)
    assert load_image(path, max_pixels=200).size == (20, 10)


def _no_pixel_decoding():
    """Within it, decoding any image's pixels fails the test: a refusal must come from the header alone."""
    from unittest import mock

    from PIL import ImageFile

    def refuse(self):
        raise AssertionError(f"pixels of {getattr(self, 'filename', '?')} were decoded")

    return mock.patch.object(ImageFile.ImageFile, "load", refuse)


def test_header_above_our_limit_is_refused_without_decoding(tmp_path):
    path = tmp_path / "claims_12000x12000.png"  # 144 Mpx: above MAX_PIXELS, below PIL's own error
    path.write_bytes(_set_png_size(_png_bytes(Image.new("RGB", (4, 4))), 12000, 12000))
    with _no_pixel_decoding(), pytest.raises(ImageError, match="more than the limit"):
        load_image(path)
    assert 12000 * 12000 > MAX_PIXELS


def test_pil_decompression_bomb_becomes_image_error(tmp_path):
    path = tmp_path / "bomb.png"  # 3.6 Gpx: PIL itself refuses it while opening
    path.write_bytes(_set_png_size(_png_bytes(Image.new("RGB", (4, 4))), 60000, 60000))
    with _no_pixel_decoding():
        with pytest.raises(ImageError, match="bomb.png.*too large"):
            load_image(path, max_pixels=None)
        with pytest.raises(ImageError, match="bomb.png"):
            load_image(path)


def test_load_truncated_images_flag_set_elsewhere_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "ok.png"
    _noise_rgb(4, 4).save(path)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageError, match="LOAD_TRUNCATED_IMAGES"):
        load_image(path)


def test_image_error_is_a_data_error():
    assert issubclass(ImageError, DataError)


# --- list_images --------------------------------------------------------------------------------

def test_list_images_is_sorted_and_filters_by_extension_case_insensitively(tmp_path):
    for name in ["b.JPG", "a.png", "c.TiFF", "d.webp", "e.bmp", "f.jpeg", "notes.txt", "g.gif", ".hidden.png"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "z.png").write_bytes(b"x")
    names = [p.name for p in list_images(tmp_path)]
    assert names == ["a.png", "b.JPG", "c.TiFF", "d.webp", "e.bmp", "f.jpeg"]
    assert {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"} == set(IMAGE_EXTENSIONS)


def test_list_images_recursive_includes_subfolders(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    for name in ["b/2.png", "a/1.png", "0.png"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path, recursive=True)] == [
        "0.png", "a/1.png", "b/2.png"]


def test_list_images_on_missing_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        list_images(tmp_path / "nope")


def _png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    chunks, offset = [], 8
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset:offset + 4])
        chunks.append((png[offset + 4:offset + 8], png[offset:offset + 12 + length]))
        offset += 12 + length
    return chunks


def test_exif_chunk_after_the_pixel_data_is_honoured_by_both_load_and_size(tmp_path):
    path = tmp_path / "late_exif.png"
    chunks = _png_chunks(_png_bytes(_corner_marked(40, 20), exif=_exif_with_orientation(6)))
    exif = [raw for kind, raw in chunks if kind == b"eXIf"]
    rest = [raw for kind, raw in chunks if kind not in (b"eXIf", b"IEND")]
    iend = [raw for kind, raw in chunks if kind == b"IEND"]
    assert len(exif) == 1
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(rest + exif + iend))
    with Image.open(path) as check:
        assert "exif" not in check.info  # not visible from the header alone
    assert load_image(path).size == (20, 40)
    assert image_size(path) == (20, 40)
