"""Built-in demo datasets, made offline from real images that installed packages ship.

Sources: scikit-learn's 8x8 handwritten digits (`load_digits`) and photos/textures bundled inside
scikit-image's wheel (`skimage.data`; only images that load without pooch downloads are used).
Every build is deterministic: the same name, seed and options give the same bytes. Each image
draws from its own random stream (seed, dataset, split, class, index), so changing one count
does not change the other images.

A build is staged in a hidden folder inside `out_dir` and moved into place when complete;
`out_dir/demo.json` marks the folder as ours, so only a previous build of the same dataset is
ever overwritten.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from ..errors import DataError
from ..io import atomic_write_json

MARKER = "demo.json"
_STAGING_PREFIX = ".demo-build-"
DIGIT_CLASSES = tuple(str(d) for d in range(10))
# Per class, this many sklearn digit samples are held out for val images of kitti_digits.
_KITTI_VAL_SAMPLES_PER_CLASS = 36


@dataclass(frozen=True)
class DemoDataset:
    name: str
    task: str  # "classification", "detection" or "segmentation"
    description: str
    builder: Callable[..., dict]  # builder(staging_dir, seed=..., **options) -> summary
    options: dict[str, Any] = field(default_factory=dict)  # option name -> default value


DEMO_DATASETS: dict[str, DemoDataset] = {}


def register_demo(name: str, task: str, description: str, **options: Any):
    def add(builder: Callable[..., dict]) -> Callable[..., dict]:
        if name in DEMO_DATASETS:
            raise ValueError(f"demo dataset {name!r} is registered twice")
        DEMO_DATASETS[name] = DemoDataset(name, task, description, builder, dict(options))
        return builder
    return add


def build_demo(name: str, out_dir: str | os.PathLike, *, seed: int = 0, **options: Any) -> dict:
    """Write demo dataset `name` into `out_dir`; returns a summary (classes, counts per split, paths)."""
    if name not in DEMO_DATASETS:
        raise DataError(f"unknown demo dataset {name!r}; choose one of: {', '.join(sorted(DEMO_DATASETS))}")
    dataset = DEMO_DATASETS[name]
    seed = _as_int("seed", seed, minimum=0)
    chosen = _resolve_options(dataset, options)
    out = Path(out_dir)
    old_files = _previous_build_files(out, name)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=out))
    try:
        summary = dataset.builder(staging, seed=seed, **chosen)
        files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        marker = {"dataset": name, "task": dataset.task, "seed": seed, "options": chosen, **summary}
        # While entries are swapped, the marker lists old and new files, so an interrupted
        # swap still leaves a folder that the next build recognises as ours.
        atomic_write_json(out / MARKER, {**marker, "files": sorted(set(old_files) | set(files))})
        _move_entries_into(staging, out, old_files)
        atomic_write_json(out / MARKER, {**marker, "files": files})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"name": name, "out_dir": str(out), **{k: v for k, v in marker.items() if k != "dataset"},
            "num_files": len(files) + 1}


# --- out_dir bookkeeping ------------------------------------------------------------------------

def _previous_build_files(out: Path, name: str) -> list[str]:
    """Files of an earlier build of `name` in `out` ([] if new or empty); refuses anything else."""
    if out.exists() and not out.is_dir():
        raise DataError(f"demo output {out} is a file; pass a new or empty folder")
    if not out.exists():
        return []
    present = sorted(
        p.relative_to(out).as_posix() for p in out.rglob("*")
        if p.is_file() and not p.relative_to(out).parts[0].startswith(_STAGING_PREFIX)
    )
    if not present:
        return []
    marker_path = out / MARKER
    if not marker_path.is_file():
        raise DataError(
            f"demo output {out} is not empty and has no {MARKER}, so it was not built by "
            "`tkit data demo`; pass a new or empty folder"
        )
    try:
        marker = json.loads(marker_path.read_text(encoding="utf-8"))
        built, recorded = marker["dataset"], set(marker["files"])
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{marker_path} is not a demo marker ({e}); delete {out} or pass another folder") from e
    if built != name:
        raise DataError(
            f"demo output {out} holds the demo dataset {built!r}, not {name!r}; pass another folder"
        )
    foreign = [f for f in present if f != MARKER and f not in recorded]
    if foreign:
        raise DataError(
            f"demo output {out} holds {len(foreign)} file(s) the previous build did not write "
            f"(e.g. {foreign[0]}); move them away or pass another folder"
        )
    return sorted(recorded)


def _move_entries_into(staging: Path, out: Path, old_files: list[str]) -> None:
    """Replace the previous build's top-level entries with the staged ones (renames, same filesystem)."""
    for leftover in out.glob(_STAGING_PREFIX + "*"):  # from an interrupted earlier build
        if leftover != staging:
            shutil.rmtree(leftover, ignore_errors=True)
    trash = staging / ".previous"
    trash.mkdir()
    for top in sorted({f.split("/")[0] for f in old_files} - {MARKER}):
        if (out / top).exists():
            os.replace(out / top, trash / top)
    for entry in sorted(staging.iterdir()):
        if entry != trash:
            os.replace(entry, out / entry.name)


def _resolve_options(dataset: DemoDataset, options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(dataset.options))
    if unknown:
        valid = ", ".join(f"{k} (default {v!r})" for k, v in dataset.options.items())
        raise DataError(f"demo dataset {dataset.name!r} has no option {unknown[0]!r}; valid options: {valid}")
    chosen = {**dataset.options, **options}
    for key, default in dataset.options.items():
        if isinstance(default, int):
            chosen[key] = _as_int(key, chosen[key], minimum=1)
    return chosen


def _as_int(key: str, value: Any, minimum: int) -> int:
    try:
        number = int(value)
        if isinstance(value, float) and number != value:
            raise ValueError
    except (TypeError, ValueError):
        raise DataError(f"demo option {key}={value!r} must be a whole number") from None
    if number < minimum:
        raise DataError(f"demo option {key}={number} must be at least {minimum}")
    return number


# --- shared pieces ------------------------------------------------------------------------------

def _rng(seed: int, *stream: str | int) -> np.random.Generator:
    """An independent random stream per (seed, dataset, split, class, index) tuple."""
    words = [seed] + [int.from_bytes(s.encode(), "little") % 2**32 if isinstance(s, str) else s for s in stream]
    return np.random.default_rng(words)


@functools.lru_cache(maxsize=None)
def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.float32), digits.target.astype(np.int64)


@functools.lru_cache(maxsize=None)
def _digit_pools(seed: int, val_per_class: int) -> dict[str, dict[str, np.ndarray]]:
    """label -> {"train": sample ids, "val": held-out sample ids}; disjoint, shuffled by seed."""
    images, targets = _sklearn_digits()
    pools: dict[str, dict[str, np.ndarray]] = {}
    for digit in range(10):
        ids = _rng(seed, "digit-split", digit).permutation(np.flatnonzero(targets == digit))
        if val_per_class >= len(ids):
            raise DataError(
                f"demo option val_per_class={val_per_class} leaves no training samples: scikit-learn has "
                f"{len(ids)} samples of digit {digit}; use at most {len(ids) - 1}"
            )
        pools[str(digit)] = {"val": ids[:val_per_class], "train": ids[val_per_class:]}
    return pools


def _skimage_image(name: str) -> np.ndarray:
    """A picture that ships inside scikit-image's wheel (`skimage.data.<name>`), read offline."""
    import skimage.data

    try:
        pixels = getattr(skimage.data, name)()
    except (ModuleNotFoundError, ConnectionError, KeyError, OSError, AttributeError) as e:
        raise DataError(
            f"scikit-image {skimage.__version__} does not ship the image skimage.data.{name} "
            f"({type(e).__name__}); install scikit-image>=0.22 from its wheel, which bundles it"
        ) from e
    return pixels[0] if isinstance(pixels, tuple) else pixels  # stereo_motorcycle -> left view


@functools.lru_cache(maxsize=None)
def _backgrounds() -> tuple[tuple[np.ndarray, bool], ...]:
    """Bundled skimage textures and photos as (HxWx3 uint8, is_grey); grey ones get tinted."""
    images = []
    for name in ("brick", "grass", "gravel", "camera", "moon", "coins", "hubble_deep_field"):
        pixels = _skimage_image(name)
        images.append((np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels, pixels.ndim == 2))
    return tuple(images)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A random crop (any scale 30-100%, random flip, grey textures tinted) resized to width x height."""
    pixels, grey = _backgrounds()[rng.integers(len(_backgrounds()))]
    h, w = pixels.shape[:2]
    scale = rng.uniform(0.3, 1.0) * min(w / width, h / height)
    crop_w, crop_h = max(1, int(width * scale)), max(1, int(height * scale))
    x0, y0 = rng.integers(0, w - crop_w + 1), rng.integers(0, h - crop_h + 1)
    crop = Image.fromarray(pixels[y0:y0 + crop_h, x0:x0 + crop_w]).resize((width, height), Image.BILINEAR)
    out = np.asarray(crop, dtype=np.float32)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if grey:
        out = out * rng.uniform(0.45, 1.0, size=3)
    return np.ascontiguousarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def _glyph_alpha(digit_8x8: np.ndarray, side: int) -> np.ndarray:
    """Upscaled digit as opacity in [0, 1]; faint bilinear fringes (< 0.1) are cut to exactly 0 so
    the ink, and with it the bounding box, is exact."""
    # A blank 1-pixel border lets strokes that touch the 8x8 edge fade out instead of ending square.
    padded = np.pad(digit_8x8, 1)
    small = Image.fromarray(np.rint(padded * (255.0 / 16.0)).astype(np.uint8))
    alpha = np.asarray(small.resize((side, side), Image.BILINEAR), dtype=np.float32) / 255.0
    alpha[alpha < 0.1] = 0.0
    return alpha


def _paste_glyph(rng: np.random.Generator, image: np.ndarray, alpha: np.ndarray, x0: int, y0: int) -> None:
    """Draw `alpha` at (x0, y0) in a random colour that contrasts with the background under it."""
    side_h, side_w = alpha.shape
    region = image[y0:y0 + side_h, x0:x0 + side_w].astype(np.float32)
    tone = rng.uniform(0.0, 1.0, size=3) * 90.0
    colour = tone if region.mean() > 127 else 255.0 - tone
    a = alpha[..., None]
    image[y0:y0 + side_h, x0:x0 + side_w] = np.rint(region * (1.0 - a) + colour * a).astype(np.uint8)


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _write(path: Path, data: bytes | str) -> None:
    """Write into the staging folder (the whole build is moved into place once complete)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    """`path,label` with paths relative to the csv's own folder."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "label"])
    writer.writerows(rows)
    _write(path, text.getvalue())


def _classification_summary(rows: dict[str, list[tuple[str, str]]], classes: list[str]) -> dict:
    return {
        "classes": classes,
        "counts": {split: {c: sum(1 for _, label in r if label == c) for c in classes} for split, r in rows.items()},
        "paths": {split: {"folder": split, "csv": f"{split}.csv"} for split in rows},
    }


# --- a) digits ----------------------------------------------------------------------------------

def digit_image(seed: int, split: str, label: str, index: int, size: int = 64, val_per_class: int = 15
                ) -> tuple[np.ndarray, int]:
    """One `digits` image (HxWx3 uint8) and the scikit-learn sample index it was drawn from."""
    images, _ = _sklearn_digits()
    pool = _digit_pools(seed, val_per_class)[label][split]
    sample = int(pool[index % len(pool)])  # train reuses samples only when per_class > pool size
    rng = _rng(seed, "digits", split, int(label), index)
    pixels = _background(rng, size, size)
    side = int(round(size * rng.uniform(0.6, 0.9)))
    x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    _paste_glyph(rng, pixels, _glyph_alpha(images[sample], side), x0, y0)
    return pixels, sample


@register_demo("digits", "classification",
               "scikit-learn handwritten digits 0-9 in random colours on skimage textures and photos; "
               "val digits are held-out samples", per_class=40, val_per_class=15, size=64)
def _build_digits(out: Path, *, seed: int, per_class: int, val_per_class: int, size: int) -> dict:
    if size < 16:
        raise DataError(f"demo option size={size} is too small for digits; use 16 or more")
    rows: dict[str, list[tuple[str, str]]] = {"train": [], "val": []}
    sources: dict[str, list[int]] = {"train": [], "val": []}
    for split, count in (("train", per_class), ("val", val_per_class)):
        for label in DIGIT_CLASSES:
            for i in range(count):
                pixels, sample = digit_image(seed, split, label, i, size, val_per_class)
                relative = f"{split}/{label}/{label}_{i:04d}_sk{sample:04d}.png"
                _write(out / relative, _png_bytes(pixels))
                rows[split].append((relative, label))
                sources[split].append(sample)
    for split, split_rows in rows.items():
        _write_csv(out / f"{split}.csv", split_rows)
    return {**_classification_summary(rows, list(DIGIT_CLASSES)), "sklearn_samples": sources}


# --- b) objects ---------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _object_photos() -> dict[str, np.ndarray]:
    sources = {"astronaut": "astronaut", "cat": "chelsea", "coffee": "coffee",
               "motorcycle": "stereo_motorcycle", "rocket": "rocket"}
    return {label: _skimage_image(name) for label, name in sources.items()}


def object_image(seed: int, split: str, label: str, index: int, size: int = 64) -> np.ndarray:
    """One `objects` image: a square crop of the class's photo. Train crops are centred in the left
    70% of the photo, val crops in the right 30%; large crops still overlap, so this reduces shared
    pixels between splits without removing them."""
    photo = _object_photos()[label]
    h, w = photo.shape[:2]
    rng = _rng(seed, "objects", split, label, index)
    side = int(rng.uniform(0.3, 1.0) * min(h, w))
    low, high = (0.0, 0.7) if split == "train" else (0.7, 1.0)
    cx, cy = rng.uniform(low, high) * w, rng.uniform(0.0, 1.0) * h
    x0 = int(np.clip(cx - side / 2, 0, w - side))
    y0 = int(np.clip(cy - side / 2, 0, h - side))
    crop = Image.fromarray(photo[y0:y0 + side, x0:x0 + side]).resize((size, size), Image.BILINEAR)
    pixels = np.asarray(crop, dtype=np.float32)
    if rng.random() < 0.5:
        pixels = pixels[:, ::-1]
    pixels = pixels * rng.uniform(0.9, 1.1, size=3) + rng.uniform(-15.0, 15.0)
    return np.ascontiguousarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


@register_demo("objects", "classification",
               "crops of five skimage photos (astronaut, cat, coffee, motorcycle, rocket); "
               "train crops from the left 70% of each photo, val from the right 30%",
               per_class=40, val_per_class=15, size=64)
def _build_objects(out: Path, *, seed: int, per_class: int, val_per_class: int, size: int) -> dict:
    if size < 8:
        raise DataError(f"demo option size={size} is too small; use 8 or more")
    classes = sorted(_object_photos())
    rows: dict[str, list[tuple[str, str]]] = {"train": [], "val": []}
    for split, count in (("train", per_class), ("val", val_per_class)):
        for label in classes:
            for i in range(count):
                relative = f"{split}/{label}/{label}_{i:04d}.png"
                _write(out / relative, _png_bytes(object_image(seed, split, label, i, size)))
                rows[split].append((relative, label))
    for split, split_rows in rows.items():
        _write_csv(out / f"{split}.csv", split_rows)
    return _classification_summary(rows, classes)


# --- c) kitti_digits ----------------------------------------------------------------------------

@dataclass(frozen=True)
class GlyphBox:
    """A pasted digit. x1, y1, x2, y2 are pixel indices of its ink, inclusive (x2 is the last
    inked column). The KITTI line holds the continuous box (x2 + 1, y2 + 1), the convention of
    data/boxes.py and pycocotools: a digit inked in columns 10..19 is x1=10, x2=20."""
    label: str
    x1: int
    y1: int
    x2: int
    y2: int

    def kitti_line(self) -> str:
        return (f"{self.label} 0.00 0 0.00 {self.x1:.2f} {self.y1:.2f} {self.x2 + 1:.2f} {self.y2 + 1:.2f} "
                "0.00 0.00 0.00 0.00 0.00 0.00 0.00")


@dataclass
class DigitScene:
    image: np.ndarray  # HxWx3 uint8, what is written to disk
    background: np.ndarray  # HxWx3 uint8, the same image before any digit was pasted
    ink: np.ndarray  # HxW int16: 0 background, k = pixels inked by boxes[k - 1]
    boxes: list[GlyphBox]


def _parse_classes(classes: Any) -> list[str]:
    names = [c.strip() for c in classes.split(",")] if isinstance(classes, str) else [str(c) for c in classes]
    if len(names) == 1 and len(names[0]) > 1:  # "0123" without commas
        names = list(names[0])
    bad = [c for c in names if c not in DIGIT_CLASSES]
    if not names or bad or len(set(names)) != len(names):
        raise DataError(f"demo option classes={classes!r} must list distinct digits 0-9, e.g. classes=0,1,7")
    return sorted(names)


def digit_scene(seed: int, split: str, index: int, width: int = 128, height: int = 128,
                classes: Any = DIGIT_CLASSES) -> DigitScene:
    """One `kitti_digits` image: 1-4 digits at random non-overlapping places and scales."""
    images, _ = _sklearn_digits()
    names = _parse_classes(classes)
    pools = _digit_pools(seed, _KITTI_VAL_SAMPLES_PER_CLASS)
    rng = _rng(seed, "kitti_digits", split, index)
    image = _background(rng, width, height)
    background = image.copy()
    ink = np.zeros((height, width), np.int16)
    taken: list[tuple[int, int, int, int]] = []  # glyph squares with a 2 px margin, x0, y0, x1, y1
    boxes: list[GlyphBox] = []
    for _ in range(int(rng.integers(1, 5))):
        label = names[int(rng.integers(len(names)))]
        pool = pools[label][split]
        alpha = _glyph_alpha(images[int(pool[rng.integers(len(pool))])], max(12, int(rng.uniform(0.18, 0.4) * min(width, height))))
        side = alpha.shape[0]
        for _attempt in range(30):
            x0, y0 = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
            square = (x0 - 2, y0 - 2, x0 + side + 2, y0 + side + 2)
            if all(square[2] <= t[0] or t[2] <= square[0] or square[3] <= t[1] or t[3] <= square[1] for t in taken):
                break
        else:
            continue  # no free place for this digit: the image gets one digit fewer
        taken.append(square)
        _paste_glyph(rng, image, alpha, x0, y0)
        rows, cols = np.nonzero(alpha)
        ink[y0 + rows, x0 + cols] = len(boxes) + 1
        boxes.append(GlyphBox(label, x0 + int(cols.min()), y0 + int(rows.min()), x0 + int(cols.max()), y0 + int(rows.max())))
    return DigitScene(image, background, ink, boxes)


@register_demo("kitti_digits", "detection",
               "1-4 handwritten digits pasted onto skimage textures, KITTI labels with exact ink boxes",
               num_train=60, num_val=20, width=128, height=128, classes=",".join(DIGIT_CLASSES))
def _build_kitti_digits(out: Path, *, seed: int, num_train: int, num_val: int, width: int, height: int,
                        classes: Any) -> dict:
    if min(width, height) < 32:
        raise DataError(f"demo options width={width}, height={height} are too small; use 32 or more")
    names = _parse_classes(classes)
    counts: dict[str, dict] = {}
    for split, count in (("train", num_train), ("val", num_val)):
        objects = dict.fromkeys(names, 0)
        for i in range(count):
            scene = digit_scene(seed, split, i, width, height, names)
            _write(out / split / "images" / f"{i:06d}.png", _png_bytes(scene.image))
            _write(out / split / "labels" / f"{i:06d}.txt", "".join(b.kitti_line() + "\n" for b in scene.boxes))
            for box in scene.boxes:
                objects[box.label] += 1
        counts[split] = {"images": count, "objects": objects}
    paths = {split: {"images": f"{split}/images", "labels": f"{split}/labels"} for split in counts}
    return {"classes": names, "counts": counts, "paths": paths}


# --- d) shapes_seg ------------------------------------------------------------------------------

SHAPE_CLASSES = ("background", "circle", "square", "triangle")  # mask value = position


@dataclass
class ShapeScene:
    image: np.ndarray  # HxWx3 uint8, what is written to disk
    mask: np.ndarray  # HxW uint8 class ids (SHAPE_CLASSES), exactly the painted pixels


def _shape_region(kind: int, cx: float, cy: float, radius: float, angle: float, size: int) -> np.ndarray:
    """Pixels (bool HxW) of a circle, square or equilateral triangle with circumradius `radius`."""
    from skimage.draw import disk, polygon

    region = np.zeros((size, size), bool)
    if kind == 1:
        rows, cols = disk((cy, cx), radius * 0.8, shape=region.shape)  # a circle as large as the others' area
    else:
        corners = 4 if kind == 2 else 3
        turns = angle + np.arange(corners) * (2 * np.pi / corners)
        rows, cols = polygon(cy + radius * np.sin(turns), cx + radius * np.cos(turns), shape=region.shape)
    region[rows, cols] = True
    return region


def shape_scene(seed: int, split: str, index: int, size: int = 128) -> ShapeScene:
    """One `shapes_seg` image: 1-4 circles, squares and triangles (any rotation, may overlap; a later shape
    covers an earlier one) in random colours on a skimage texture, and its mask of class ids."""
    rng = _rng(seed, "shapes_seg", split, index)
    image = _background(rng, size, size)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        kind = int(rng.integers(1, len(SHAPE_CLASSES)))
        radius = rng.uniform(0.1, 0.25) * size
        cx, cy = (rng.uniform(radius, size - radius) for _ in range(2))
        region = _shape_region(kind, cx, cy, radius, rng.uniform(0, 2 * np.pi), size)
        if not region.any():
            continue
        under = image[region].astype(np.float32).mean(axis=0)
        for _attempt in range(20):  # a colour that stands out from the background under the shape
            colour = rng.uniform(0, 255, size=3)
            if np.abs(colour - under).sum() > 150:
                break
        shade = colour + rng.normal(0.0, 6.0, size=(int(region.sum()), 3))
        image[region] = np.clip(np.rint(shade), 0, 255).astype(np.uint8)
        mask[region] = kind
    return ShapeScene(image, mask)


@register_demo("shapes_seg", "segmentation",
               "circles, squares and triangles in random colours on skimage textures, palette PNG masks "
               "(0 background, 1 circle, 2 square, 3 triangle)", num_train=60, num_val=20, size=128)
def _build_shapes_seg(out: Path, *, seed: int, num_train: int, num_val: int, size: int) -> dict:
    from ..vision.masks import ClassTable, mask_png_bytes  # masks are written the way training reads them

    if size < 32:
        raise DataError(f"demo option size={size} is too small for shapes_seg; use 32 or more")
    table = ClassTable.build(list(SHAPE_CLASSES))
    counts: dict[str, dict] = {}
    for split, count in (("train", num_train), ("val", num_val)):
        pixels = np.zeros(len(SHAPE_CLASSES), np.int64)
        for i in range(count):
            scene = shape_scene(seed, split, i, size)
            _write(out / split / "images" / f"{i:06d}.png", _png_bytes(scene.image))
            _write(out / split / "masks" / f"{i:06d}.png", mask_png_bytes(scene.mask, table))
            pixels += np.bincount(scene.mask.reshape(-1), minlength=len(SHAPE_CLASSES))
        counts[split] = {"images": count, "pixels": dict(zip(SHAPE_CLASSES, pixels.tolist()))}
    paths = {split: {"images": f"{split}/images", "masks": f"{split}/masks"} for split in counts}
    return {"classes": list(SHAPE_CLASSES), "counts": counts, "paths": paths}


from . import text_demo  # noqa: E402,F401  (registers the NLP demos "sentences" and "entities")
from . import keypoint_demo  # noqa: E402,F401  (registers the keypoint demos "figures" and "faces")
