"""Helpers for the reliability tests: the CLI result checks and the bad-image corpus."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("0", "1", "2")
FAST = [
    "model.pretrained=false", "model.backbone=mobilenet_v2", "data.image_size=32", "train.epochs=1",
    "train.batch_size=8", "train.num_workers=0", "train.histograms=false",
]


class CliResult:
    def __init__(self, rc: int, out: str, err: str):
        self.rc, self.out, self.err = rc, out, err

    @property
    def error(self) -> str:
        """The `tkit: error: ...` message (everything from that line on)."""
        lines = self.err.strip().splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith("tkit: error: ")]
        assert starts, f"no 'tkit: error:' line on stderr:\n{self.err}"
        return "\n".join(lines[starts[-1]:])

    def assert_user_error(self, *words: str) -> str:
        """Exit code 2, no traceback, a one- or two-line message that contains every word."""
        assert self.rc == 2, f"exit code {self.rc}, stderr:\n{self.err}"
        assert "Traceback" not in self.err and "Traceback" not in self.out
        assert self.err.count("tkit: error: ") == 1
        message = self.error
        assert len(message.splitlines()) <= 2, message
        for word in words:
            assert word in message, f"{word!r} not in {message!r}"
        return message


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# -- image files, good and bad ------------------------------------------------------------------

def _pixels(seed: int, height: int = 32, width: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def truncated_jpeg(seed: int) -> bytes:
    data = encode(Image.fromarray(_pixels(seed, 64, 64)), "JPEG", quality=90)
    return data[: len(data) // 2]


BAD_IMAGES = ("zero_bytes.jpg", "truncated.jpg", "text_named.jpg", "huge_300x300.png")
GOOD_ODD_IMAGES = ("png_named.jpg", "grayscale.png", "rgba.png", "palette.png", "sixteen_bit.png", "cmyk.jpg",
                   "exif_rotated.jpg", "ñandú_日本.png")
# huge_300x300.png is refused only because the corpus runs use this limit (90,000 > 50,000 pixels).
MAX_PIXELS = "data.max_image_pixels=50000"


def write_image_corpus(folder: Path, seed: int) -> None:
    """Write BAD_IMAGES (each must be skipped and reported) and GOOD_ODD_IMAGES (each must load)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero_bytes.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(truncated_jpeg(seed))
    (folder / "text_named.jpg").write_text("these are notes, not pixels\n", encoding="utf-8")
    (folder / "huge_300x300.png").write_bytes(encode(Image.new("RGB", (300, 300), (9, 9, 9)), "PNG"))

    (folder / "png_named.jpg").write_bytes(encode(Image.fromarray(_pixels(seed + 1)), "PNG"))
    (folder / "grayscale.png").write_bytes(encode(Image.fromarray(_pixels(seed + 2)[..., 0], "L"), "PNG"))
    rgba = np.dstack([_pixels(seed + 3), _pixels(seed + 4)[..., :1]])
    (folder / "rgba.png").write_bytes(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    palette = Image.fromarray(_pixels(seed + 5)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    (folder / "palette.png").write_bytes(encode(palette, "PNG"))
    sixteen = np.random.default_rng(seed + 6).integers(0, 65536, (32, 32)).astype(np.uint16)
    (folder / "sixteen_bit.png").write_bytes(encode(Image.fromarray(sixteen), "PNG"))
    (folder / "cmyk.jpg").write_bytes(encode(Image.fromarray(_pixels(seed + 7)).convert("CMYK"), "JPEG"))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 24 wide x 32 high, shown rotated 90 degrees
    (folder / "exif_rotated.jpg").write_bytes(
        encode(Image.fromarray(_pixels(seed + 8, 32, 24)), "JPEG", exif=exif.tobytes()))
    (folder / "ñandú_日本.png").write_bytes(encode(Image.fromarray(_pixels(seed + 9)), "PNG"))
