"""The one image loader: every task, converter and demo reads pixels through `load_image`.

What it guarantees, whatever the file holds: an upright (EXIF orientation applied), fully decoded,
8-bit RGB `PIL.Image`. Transparent pixels are composited onto WHITE, the way most viewers show
them. A file that cannot give such an image raises `ImageError` with a one-line message naming
the file, the reason and a fix; truncated files are errors, never padded with grey.
"""
from __future__ import annotations

import os
import struct
import threading
from collections import Counter
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from ..data.items import parse_skipped, skipped_entry  # noqa: F401 (the vision layer re-exports them)
from ..errors import DataError, first_line
from ..spec import require_path

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
MAX_PIXELS = 100_000_000  # width * height after which a file is refused unread (e.g. 10000 x 10000)

_ORIENTATION_TAG = 0x0112
# EXIF orientation -> the transpose that makes the pixels upright (the table ImageOps.exif_transpose uses).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_WHITE = (255, 255, 255, 255)


class ImageError(DataError):
    """An image file is empty, truncated, too large or not an image at all."""


def load_image(path: str | os.PathLike, max_pixels: int | None = MAX_PIXELS,
               limit_key: str = "data.max_image_pixels", short_side: int | None = None) -> Image.Image:
    """Decode `path` into an upright 8-bit RGB image; `max_pixels=None` lifts our size limit (Pillow's stays).

    `limit_key` is the setting the too-large message tells the user to raise. `short_side`: an image whose
    shorter side is longer is returned reduced to it (a JPEG is first decoded at a coarser DCT scale that
    still keeps both sides at least that long, which is what makes decoding a camera photo for a 224 px
    network cheap)."""
    path = Path(path)
    # Never let a truncated JPEG/PNG be padded with grey: someone may have flipped PIL's global.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise ImageError(
            f"{path}: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True, so truncated files would load "
            "silently padded with grey; set it back to False before loading images"
        )
    with open_checked(path, max_pixels, limit_key) as im:
        if short_side and im.format == "JPEG" and min(im.size) >= 2 * short_side:
            im.draft(im.mode, (short_side, short_side))
        try:
            im.load()
        except Image.DecompressionBombError as e:  # a GIF/TIFF frame larger than its header said
            raise ImageError(f"{path}: holds a frame too large to decode safely ({first_line(e)}); "
                             "re-save it as a single-frame PNG or JPEG, or remove it from the dataset") from e
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
            raise ImageError(
                f"{path}: the file is truncated or corrupt ({first_line(e)}); "
                "re-copy or re-export it, or remove it from the dataset"
            ) from e
        orientation = exif_orientation(im, path)
        rgb = _to_rgb(im, path)
    if orientation in _UPRIGHT:
        rgb = rgb.transpose(_UPRIGHT[orientation])
    if short_side:
        size = reduced_size(rgb.size, short_side)
        if size != rgb.size:
            rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    rgb.load()
    return rgb


def reduced_size(size: tuple[int, int], short_side: int) -> tuple[int, int]:
    """(width, height) scaled so the shorter side is `short_side`; unchanged when it is not longer already."""
    w, h = size
    shorter = min(w, h)
    if shorter <= short_side:
        return w, h
    scale = short_side / shorter
    return (short_side, max(1, round(h * scale))) if w <= h else (max(1, round(w * scale)), short_side)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the upright image, read from the header without decoding the pixels."""
    path = Path(path)
    with open_checked(path, max_pixels=None, header_only=True) as im:
        width, height = im.size
        orientation = exif_orientation(im, path)
    # Orientations 5-8 rotate by 90 degrees, swapping width and height.
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files (by extension, any case) in `folder`, sorted; names starting with '.' are skipped
    (macOS '._x.jpg' side files, editors' temp files)."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is a file, not a folder"
        raise DataError(f"image folder {folder} {what}: pass a folder that holds the images")
    found: list[Path] = []
    seen_dirs: set[Path] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = Path(root).resolve()
        if real in seen_dirs:  # a symlink loop: do not walk the same folder twice
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        found += [
            Path(root) / name for name in files
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS
        ]
    return sorted(found)


def collect_images(value: str | None, key: str = "inference.images") -> list[Path]:
    """The images `inference` reads: a folder (recursively), one image file, or a .txt file with one
    path per line (relative to the .txt's folder). `value` is the spec setting `key`."""
    path = require_path(key, value)
    if path.is_dir():
        images = list_images(path, recursive=True)
        if not images:
            raise DataError(f"{key}: {path} contains no image files")
        return images
    if path.suffix.lower() == ".txt":
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        return [Path(ln) if Path(ln).is_absolute() else path.parent / ln for ln in lines]
    return [path]


def output_names(paths: list[Path], suffix: str = ".png") -> list[Path]:
    """A distinct relative output path per image, for files written per input image (annotated copies):
    the image's path below the folder all of them share, with `suffix` for its extension. Images in one
    folder that differ only in extension keep it (`x.jpg` -> `x.jpg.png`, `x.png` -> `x.png.png`)."""
    if not paths:
        return []
    root = Path(os.path.commonpath([str(Path(p).parent.absolute()) for p in paths]))
    relative = [Path(p).absolute().relative_to(root) for p in paths]
    plain = [r.with_suffix(suffix) for r in relative]
    shared = {n for n, count in Counter(plain).items() if count > 1}
    names = [r.with_name(r.name + suffix) if n in shared else n for r, n in zip(relative, plain)]
    seen: dict[Path, Path] = {}
    for path, name in zip(paths, names):
        if name in seen:  # only when one image is literally named like another's output, e.g. x.jpg.png
            raise DataError(f"images {seen[name]} and {path} would both be written as {name}; rename one of them")
        seen[name] = path
    return names


def check_unique_stems(paths: list[Path], output: str) -> None:
    """Refuse, before anything is written, two images whose outputs are named by file stem alone
    (`output` is e.g. "labels/{stem}.txt")."""
    seen: dict[str, Path] = {}
    for path in paths:
        other = seen.setdefault(Path(path).stem, path)
        if other is not path:
            raise DataError(f"images {other} and {path} would both write {output.format(stem=Path(path).stem)} "
                            "(their names differ only in folder or extension); rename one, or run each folder "
                            "separately")


def open_checked(path: Path, max_pixels: int | None, limit_key: str = "data.max_image_pixels",
                 header_only: bool = False) -> Image.Image:
    """Image.open with every failure turned into an ImageError; refuses huge images from the header.

    With `max_pixels` set, it is the only size limit: Pillow's own (DecompressionBombError, 179 million
    pixels) gives way to it, so the setting can be raised past Pillow's. With None, Pillow's limit stays,
    unless `header_only` (the caller reads the size and never decodes)."""
    try:
        size_bytes = path.stat().st_size
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file; check the path or the label file that names it") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot be read ({first_line(e)}); check its permissions") from e
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image file; name an image file")
    if size_bytes == 0:
        raise ImageError(f"{path}: the file is empty (0 bytes); re-copy it or remove it from the dataset")
    try:
        # Our own max_pixels limit below replaces Pillow's warning and, when Pillow refuses a header
        # that our limit allows, Pillow's error: the size limit is the user's setting alone.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                im = Image.open(path)
            except Image.DecompressionBombError:
                if max_pixels is None and not header_only:
                    raise
                im = _open_beyond_pillow_limit(path)
    except Image.DecompressionBombError as e:
        raise ImageError(
            f"{path}: the header claims an image too large to decode safely ({first_line(e)}); "
            f"resize the image or remove it from the dataset, or set {limit_key} above its pixel count if you trust it"
        ) from e
    except UnidentifiedImageError as e:
        raise ImageError(
            f"{path}: not an image that Pillow can read ({size_bytes} bytes); "
            f"convert it to PNG or JPEG, or remove it from the dataset"
        ) from e
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        raise ImageError(
            f"{path}: the image header is corrupt ({first_line(e)}); re-copy or re-export the file"
        ) from e
    width, height = im.size
    if max_pixels is not None and width * height > max_pixels:
        im.close()
        raise ImageError(
            f"{path}: image is {width}x{height} = {width * height:,} pixels, more than the limit of "
            f"{max_pixels:,}; downscale it, or raise {limit_key} if you trust the file"
        )
    return im


_PILLOW_LIMIT_LOCK = threading.Lock()


def _open_beyond_pillow_limit(path: Path) -> Image.Image:
    """Image.open with Pillow's own pixel limit lifted for this call (it reads only the header; the
    caller applies max_pixels). Pillow keeps that limit in a module global, so the change is serialised."""
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def exif_orientation(im: Image.Image, path: Path) -> int:
    """The EXIF orientation (1..8) of an opened image, read the same way for load and size."""
    try:
        if im.format == "PNG" and "exif" not in im.info and not _png_metadata_after_pixels(im):
            # PngImageFile.getexif() decodes the whole image to look for metadata after the pixel
            # data; there is none, so the header's chunks (read by the base class) are complete.
            exif = Image.Image.getexif(im)
        else:
            exif = im.getexif()
        orientation = int(exif.get(_ORIENTATION_TAG, 1))
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, TypeError, KeyError):
        return 1  # unreadable EXIF: keep the pixels as stored, in load_image and image_size alike
    return orientation if orientation in range(1, 9) else 1


def _png_metadata_after_pixels(im: Image.Image) -> bool:
    """True when a PNG has eXIf/text chunks after its first IDAT (found by seeking, not decoding)."""
    fp = im.fp
    if fp is None:
        return False
    position = fp.tell()
    try:
        fp.seek(8)  # after the PNG signature
        seen_pixels = False
        while True:
            head = fp.read(8)
            if len(head) < 8:
                return False
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IDAT":
                seen_pixels = True
            elif seen_pixels and kind in (b"eXIf", b"tEXt", b"zTXt", b"iTXt"):
                return True
            elif kind == b"IEND":
                return False
            fp.seek(length + 4, os.SEEK_CUR)  # chunk data + CRC
    finally:
        fp.seek(position)


def _to_rgb(im: Image.Image, path: Path) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im.copy()
    if (mode == "P" and "transparency" in im.info) or mode in ("PA", "RGBa", "La"):
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in ("LA", "RGBA"):
        background = Image.new("RGBA", im.size, _WHITE)
        return Image.alpha_composite(background, im.convert("RGBA")).convert("RGB")
    if mode.startswith("I"):  # I;16, I;16B, I;16L, I;16N, I (32-bit)
        return Image.fromarray(_sixteen_bit_to_8(np.asarray(im)), "L").convert("RGB")
    if mode == "F":
        return Image.fromarray(_float_to_8(np.asarray(im)), "L").convert("RGB")
    try:
        return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, ...
    except ValueError as e:
        raise ImageError(
            f"{path}: colour mode {mode} cannot be converted to RGB ({first_line(e)}); "
            "re-save the image as an RGB PNG or JPEG"
        ) from e


def _sixteen_bit_to_8(values: np.ndarray) -> np.ndarray:
    """16-bit range 0..65535 -> 0..255, rounded (65535 -> 255, 32768 -> 128).

    32-bit integer images whose values leave that range are stretched from their min..max instead.
    """
    values = values.astype(np.int64)
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > 65535:
        span = max(high - low, 1)
        return (((values - low) * 255 + span // 2) // span).astype(np.uint8)
    return ((values * 255 + 32767) // 65535).astype(np.uint8)


def _float_to_8(values: np.ndarray) -> np.ndarray:
    """Float images: 0..1 -> 0..255, 0..255 kept, anything else stretched from min..max; NaN -> 0."""
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if low >= 0.0 and high <= 1.0:
        values = values * 255.0
    elif low < 0.0 or high > 255.0:
        values = (values - low) * (255.0 / max(high - low, 1e-12))
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def undecodable(paths: list, max_pixels: int | None = MAX_PIXELS) -> dict[str, str]:
    """{path: reason} for every image that does not fully decode; the rest are fine to train on.

    A full decode, not a header read: a truncated file must be reported even when it would sit in
    a batch that drop_last or limit_train_batches never loads. Decoding runs on a few threads
    (PIL releases the GIL), about a millisecond per small image.
    """
    from concurrent.futures import ThreadPoolExecutor

    def check(path) -> str | None:
        try:
            load_image(path, max_pixels=max_pixels)
        except ImageError as e:
            return str(e)
        return None

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        reasons = list(pool.map(check, paths))
    return {str(p): r for p, r in zip(paths, reasons) if r is not None}
