"""Segmentation masks: read mask files as class ids, map them through a class table, pair them with
their images, rasterise COCO polygons/RLE, and write palette PNG masks.

Two kinds of number live in a mask:

- SOURCE ids, what a file holds: the pixel values of a single-channel (L, I;16, I) mask, the palette
  INDICES of a palette (P) mask (never its colours), or, for an RGB colour mask, the first source id
  of the class whose colour a pixel has.
- TRAINING indices 0..C-1, the model's output order, and `ignore_index` (excluded from loss and
  metrics). `ClassTable` maps source ids to training indices; several source ids may map to one
  class (TAO's data_class_config). Pixels holding `ignore_index` stay ignored. Ids in no class, and
  colours of no class, become `ignore_index` and are counted per id (per colour) with the files
  they occur in: never trained as a wrong class, never dropped unsaid.

A mask labels its image as `load_image` returns it, upright after the image's EXIF orientation (a
mask's own EXIF tag is not applied). A mask whose size differs is left out as `size_mismatch`; when
it matches the image's stored, unrotated pixels instead, the message says so.

COCO JSON: each image's annotations are painted in file order onto a canvas of the background class
(the class named "background"; `ignore_index` when there is none), a later annotation over an
earlier one; `iscrowd` annotations and those of a category named "ignore" or "DontCare" are painted
`ignore_index`. Categories map to classes by the explicit ids of a class-table entry, else by name
(ignoring case).

Problems are counted in `MaskProblems` under these kinds (each with up to 20 "file: message" examples):
  pairing:  image_without_mask, mask_without_image, duplicate_image_stem, duplicate_mask_stem,
            unreadable_image, unreadable_mask, size_mismatch (each of these leaves the image out)
  content:  unknown_ids / unknown_colours (per id or colour: pixels, masks, files), lossy_mask (a JPEG
            mask: compression blurs class ids), transparent_pixels (RGBA colour mask: fully
            transparent pixels read as ignore), mask_all_ignored
  COCO:     image_missing, image_not_in_annotations, annotation_without_image, bad_annotation,
            no_segmentation (its box, when valid, is painted ignore), unmapped_classes (per category
            name, annotations painted ignore), uncovered_pixels_ignored (no background class)
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..data.names import class_name_problem
from ..errors import DataError, SpecError, first_line
from .boxes import DataProblems
from .images import MAX_PIXELS, ImageError, exif_orientation, list_images, open_checked

BACKGROUND = "background"
IGNORE_CATEGORIES = frozenset({"ignore", "dontcare"})  # COCO category names painted ignore_index
_LOSSY = frozenset({".jpg", ".jpeg"})
_LUT_LIMIT = 1 << 16  # source ids below this are mapped with a lookup table, larger ones with np.unique
_EXAMPLES = 20
PathLike = str | os.PathLike
Colour = tuple[int, int, int]


class MaskError(ImageError):
    """A mask file cannot be read as class ids."""


def default_palette() -> np.ndarray:
    """[256, 3] uint8: PASCAL VOC's colour for each index (bits of the index spread over r, g, b), so
    palette masks written here look like VOC's; index 255 (the usual ignore id) is (224, 224, 192)."""
    out = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for bit in range(7, -1, -1):
            r |= (c & 1) << bit
            g |= ((c >> 1) & 1) << bit
            b |= ((c >> 2) & 1) << bit
            c >>= 3
        out[i] = r, g, b
    return out


_PALETTE = default_palette()


# ------------------------------------------------------------------------------------ class table

@dataclass(frozen=True)
class ClassEntry:
    """One training class: its name, the source ids that mean it, and its colour."""

    name: str
    ids: tuple[int, ...]
    colour: Colour
    explicit_ids: bool = False  # ids given in the spec (not just the entry's position)
    explicit_colour: bool = False


@dataclass(frozen=True)
class ClassTable:
    """Training classes in output order, how source ids (and colours) map to them, and the ignore id."""

    entries: tuple[ClassEntry, ...]
    ignore_index: int = 255

    @classmethod
    def build(cls, classes: Sequence[Any], ignore_index: int = 255, key: str = "data.classes") -> "ClassTable":
        """From a spec list: names (class i means source id i), or entries {name, ids, colour} (an entry
        without ids means its position). Mistakes raise SpecError naming `key`."""
        if not classes:
            raise SpecError(f"{key} is empty: list the classes, e.g. {key}=[background,road,car]")
        entries = []
        for position, raw in enumerate(classes):
            name, ids, colour = _entry_fields(raw, position, key)
            explicit_ids = ids is not None
            ids = tuple(int(i) for i in ids) if explicit_ids else (position,)
            if not ids:
                raise SpecError(f"{key}[{position}] ({name}): ids is empty; give the source ids of this class "
                                "or leave ids out (then the class is id {position})")
            explicit_colour = colour is not None
            if colour is None:
                colour = tuple(int(v) for v in _PALETTE[ids[0]]) if ids[0] < 256 else _hashed_colour(ids[0])
            entries.append(ClassEntry(name, ids, tuple(int(v) for v in colour), explicit_ids, explicit_colour))
        table = cls(tuple(entries), int(ignore_index))
        table._check(key)
        return table

    def _check(self, key: str) -> None:
        seen_names: dict[str, str] = {}
        owner: dict[int, str] = {}
        colours: dict[Colour, str] = {}
        for entry in self.entries:
            if not entry.name.strip():
                raise SpecError(f"{key}: a class has an empty name")
            problem = class_name_problem(entry.name)
            if problem:
                raise SpecError(f"{key}: class {entry.name!r} {problem}")
            if entry.name.lower() in seen_names:
                raise SpecError(f"{key}: classes '{seen_names[entry.name.lower()]}' and '{entry.name}' have the same "
                                "name (names are matched ignoring case)")
            seen_names[entry.name.lower()] = entry.name
            for i in entry.ids:
                if i < 0:
                    raise SpecError(f"{key}: class '{entry.name}' has source id {i}; ids are 0 or more")
                if i == self.ignore_index:
                    raise SpecError(f"{key}: class '{entry.name}' uses source id {i}, which is data.ignore_index; "
                                    "change the class's ids or data.ignore_index")
                if i in owner:
                    raise SpecError(f"{key}: source id {i} belongs to both '{owner[i]}' and '{entry.name}'; "
                                    "each id can mean one class only")
                owner[i] = entry.name
            if entry.colour in colours:
                raise SpecError(f"{key}: classes '{colours[entry.colour]}' and '{entry.name}' have the same colour "
                                f"{list(entry.colour)}; give each class its own colour")
            colours[entry.colour] = entry.name
        if 0 <= self.ignore_index < len(self.entries):
            raise SpecError(f"data.ignore_index={self.ignore_index} is a training class index (0..{len(self.entries) - 1}); "
                            f"use an id no class has, e.g. 255")

    # -- facts -----------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    @property
    def num_classes(self) -> int:
        return len(self.entries)

    @property
    def colours(self) -> list[Colour]:
        return [e.colour for e in self.entries]

    @property
    def background(self) -> int | None:
        """Index of the class named "background" (any case): COCO's uncovered pixels; None if absent."""
        return next((i for i, e in enumerate(self.entries) if e.name.lower() == BACKGROUND), None)

    @property
    def has_colours(self) -> bool:
        """Whether any class was given a colour: then RGB masks are always read as colour masks."""
        return any(e.explicit_colour for e in self.entries)

    def index_of_id(self) -> dict[int, int]:
        return {i: k for k, e in enumerate(self.entries) for i in e.ids}

    def ignore_colour(self) -> Colour:
        return tuple(int(v) for v in _PALETTE[self.ignore_index]) if 0 <= self.ignore_index < 256 else (0, 0, 0)

    def palette(self) -> list[int]:
        """A 768-value PIL palette for masks of training indices: class colours, the ignore colour at
        ignore_index, VOC's colours elsewhere."""
        colours = _PALETTE.copy()
        for k, entry in enumerate(self.entries):
            if k < 256:
                colours[k] = entry.colour
        if 0 <= self.ignore_index < 256:
            colours[self.ignore_index] = self.ignore_colour()
        return colours.reshape(-1).tolist()

    # -- mapping ---------------------------------------------------------------------------------
    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Source ids -> int64 training indices; unknown ids -> ignore_index (count them with unknown_ids)."""
        ids = np.asarray(ids)
        if ids.size and 0 <= int(ids.min()) and int(ids.max()) < _LUT_LIMIT:
            lut = np.full(int(ids.max()) + 1, self.ignore_index, np.int64)
            for source, k in self.index_of_id().items():
                if source < len(lut):
                    lut[source] = k
            return lut[ids]
        values, inverse = np.unique(ids, return_inverse=True)
        mapping = self.index_of_id()
        mapped = np.array([mapping.get(int(v), self.ignore_index) for v in values], np.int64)
        return mapped[inverse].reshape(ids.shape)

    def unknown_ids(self, ids: np.ndarray) -> dict[int, int]:
        """{source id: pixels} for ids that are neither a class's nor ignore_index."""
        values, counts = np.unique(np.asarray(ids), return_counts=True)
        known = self.index_of_id()
        return {int(v): int(n) for v, n in zip(values, counts) if int(v) not in known and int(v) != self.ignore_index}


def _entry_fields(raw: Any, position: int, key: str) -> tuple[str, Sequence[int] | None, Sequence[int] | None]:
    if isinstance(raw, str):
        return raw, None, None
    if isinstance(raw, Mapping):
        unknown = set(raw) - {"name", "ids", "colour"}
        if unknown or "name" not in raw:
            raise SpecError(f"{key}[{position}]: a class entry is a name or {{name, ids, colour}}, got {dict(raw)!r}")
        name, ids, colour = raw["name"], raw.get("ids"), raw.get("colour")
    elif hasattr(raw, "name"):
        name, ids, colour = raw.name, getattr(raw, "ids", None), getattr(raw, "colour", None)
    else:
        raise SpecError(f"{key}[{position}]: a class entry is a name or {{name, ids, colour}}, got {raw!r}")
    if colour is not None and (len(colour) != 3 or any(not 0 <= int(v) <= 255 for v in colour)):
        raise SpecError(f"{key}[{position}] ({name}): colour must be [r, g, b] with values 0..255, got {colour!r}")
    return str(name), ids, colour


def _hashed_colour(source_id: int) -> Colour:
    """A fixed colour for ids past the 256-entry palette."""
    rng = np.random.default_rng(source_id)
    return tuple(int(v) for v in rng.integers(0, 256, 3))


# ---------------------------------------------------------------------------------------- problems

@dataclass
class MaskProblems(DataProblems):
    """DataProblems plus the per-id and per-colour counts of mask pixels that map to no class."""

    unknown_ids: dict[int, dict] = field(default_factory=dict)  # id -> {"pixels", "masks", "files"}
    unknown_colours: dict[Colour, dict] = field(default_factory=dict)

    def count_unknown(self, table: dict, key: Any, pixels: int, file: str) -> None:
        entry = table.setdefault(key, {"pixels": 0, "masks": 0, "files": []})
        entry["pixels"] += pixels
        entry["masks"] += 1
        if len(entry["files"]) < _EXAMPLES:
            entry["files"].append(file)

    def merge(self, other: "MaskProblems") -> None:
        for kind, n in other.counts.items():
            self.counts[kind] = self.counts.get(kind, 0) + n
            shown = self.examples.setdefault(kind, [])
            shown.extend(other.examples.get(kind, [])[: max(0, _EXAMPLES - len(shown))])
        for name, n in other.unmapped_classes.items():
            self.unmapped_classes[name] = self.unmapped_classes.get(name, 0) + n
        for mine, theirs in ((self.unknown_ids, other.unknown_ids), (self.unknown_colours, other.unknown_colours)):
            for key, entry in theirs.items():
                into = mine.setdefault(key, {"pixels": 0, "masks": 0, "files": []})
                into["pixels"] += entry["pixels"]
                into["masks"] += entry["masks"]
                into["files"].extend(entry["files"][: max(0, _EXAMPLES - len(into["files"]))])

    def as_dict(self) -> dict:
        return {**super().as_dict(),
                "unknown_ids": {str(k): v for k, v in sorted(self.unknown_ids.items())},
                "unknown_colours": {",".join(map(str, k)): v for k, v in sorted(self.unknown_colours.items())}}

    def summary_lines(self) -> list[str]:
        """One line per kind of problem, for the log."""
        lines = [f"{n} x {kind} (e.g. {self.examples.get(kind, [''])[0]})" for kind, n in self.counts.items()]
        for name, n in self.unmapped_classes.items():
            lines.append(f"{n} annotations of category '{name}' map to no class and are painted ignore "
                         "(add it to data.classes)")
        for what, table in (("id", self.unknown_ids), ("colour", self.unknown_colours)):
            for key, entry in sorted(table.items()):
                shown = list(key) if isinstance(key, tuple) else key
                lines.append(f"{entry['pixels']} pixels of {what} {shown} in {entry['masks']} masks (e.g. "
                             f"{entry['files'][0]}) are in no class and are ignored (add it to data.classes)")
        return lines


# ------------------------------------------------------------------------------------- reading

@dataclass
class SourceMask:
    """A mask file as read: source ids, and what reading it noticed."""

    ids: np.ndarray  # int64 [H, W]
    colour: bool = False  # read as an RGB colour mask
    unknown_colours: dict[Colour, int] = field(default_factory=dict)  # colour -> pixels (read as ignore)
    transparent: int = 0  # fully transparent pixels of an RGBA colour mask (read as ignore)


def read_mask(path: PathLike, table: ClassTable | None = None, max_pixels: int | None = MAX_PIXELS) -> SourceMask:
    """Read one mask file as source ids (module docstring); MaskError names the file when it cannot be.

    RGB(A) masks are colour masks when the table gives colours or the channels differ (an RGB file
    whose three channels are equal is read as grey ids); their colours map to the class's first id."""
    path = Path(path)
    with open_checked(path, max_pixels) as im:
        try:
            im.load()
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
            raise MaskError(f"{path}: the mask file is truncated or corrupt ({first_line(e)}); re-export it") from e
        mode = im.mode
        if mode in ("L", "P", "1"):
            return SourceMask(np.asarray(im).astype(np.int64))
        if mode.startswith("I"):  # I;16, I;16B, I;16L, I (32-bit): ids as stored
            return SourceMask(np.asarray(im).astype(np.int64))
        if mode in ("LA", "PA"):
            return SourceMask(np.asarray(im)[..., 0].astype(np.int64))
        if mode in ("RGB", "RGBA"):
            pixels = np.asarray(im)
        else:
            raise MaskError(f"{path}: mask colour mode {mode} holds no class ids; save masks as single-channel "
                            "(L / 16-bit), palette (P) or RGB colour PNGs")
    rgb = pixels[..., :3]
    alpha = pixels[..., 3] if pixels.shape[-1] == 4 else None
    grey = not (table is not None and table.has_colours) and bool(
        np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]))
    if grey:
        return SourceMask(rgb[..., 0].astype(np.int64))
    if table is None:
        raise MaskError(f"{path}: an RGB colour mask needs a class table with colours (data.classes)")
    return _colour_ids(rgb, alpha, table)


def _pack(colour: Colour) -> int:
    return (int(colour[0]) << 16) | (int(colour[1]) << 8) | int(colour[2])


def _unpack(key: int) -> Colour:
    return (key >> 16, (key >> 8) & 255, key & 255)


def _colour_ids(rgb: np.ndarray, alpha: np.ndarray | None, table: ClassTable) -> SourceMask:
    keys = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    by_colour = {_pack(e.colour): e.ids[0] for e in table.entries}
    by_colour.setdefault(_pack(table.ignore_colour()), table.ignore_index)
    values, inverse = np.unique(keys, return_inverse=True)
    ids = np.array([by_colour.get(int(v), table.ignore_index) for v in values], np.int64)[inverse].reshape(keys.shape)
    transparent = 0
    counted = keys
    if alpha is not None:
        clear = alpha == 0
        transparent = int(clear.sum())
        ids[clear] = table.ignore_index
        counted = keys[~clear]  # transparent pixels are ignored whatever their colour: not "unknown" too
    values, counts = np.unique(counted, return_counts=True)
    unknown = {_unpack(int(v)): int(n) for v, n in zip(values, counts) if int(v) not in by_colour}
    return SourceMask(ids, True, unknown, transparent)


# ------------------------------------------------------------------------------------- items

@dataclass(frozen=True)
class SegItem:
    """One image and where its target comes from: a mask file, or COCO shapes painted in order."""

    image: Path
    mask: Path | None = None
    size: tuple[int, int] | None = None  # (width, height) of the upright image = of its target
    coco: bool = False
    shapes: tuple = ()  # COCO: ((training index or ignore_index, segmentation), ...) in paint order
    fill: int = 0  # COCO: value of pixels no shape covers (background index, or ignore_index)


def image_geometry(path: PathLike) -> tuple[tuple[int, int], tuple[int, int], int]:
    """(upright (w, h), stored (w, h), EXIF orientation) of an image, from its header."""
    path = Path(path)
    with open_checked(path, None, header_only=True) as im:
        stored = im.size
        orientation = exif_orientation(im, path)
    upright = (stored[1], stored[0]) if orientation in (5, 6, 7, 8) else stored
    return upright, stored, orientation


def _size_message(image: Path, what: str, size: tuple[int, int],
                  geometry: tuple[tuple[int, int], tuple[int, int], int]) -> str:
    (w, h), (sw, sh), orientation = geometry
    text = f"{what} is {size[0]}x{size[1]}, its image {image.name} is {w}x{h}"
    if size == (sw, sh) and (sw, sh) != (w, h):
        text += (f" after its EXIF orientation {orientation} (stored {sw}x{sh}, which the {what} matches: "
                 "it was drawn on the unrotated pixels; rotate it upright or remove the image's orientation tag)")
    else:
        text += " (masks label the upright image, as viewers show it)"
    return text + "; left out"


def pair_masks(images_dir: PathLike, masks_dir: PathLike, problems: MaskProblems,
               images_key: str = "data.train_images", masks_key: str = "data.train_masks") -> list[SegItem]:
    """Images and masks matched by file stem, sizes compared from the headers; every image without a
    usable mask, and every mask without an image, is counted in `problems` (module docstring)."""
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    images, masks = list_images(images_dir), list_images(masks_dir)
    if not images:
        raise DataError(f"{images_key}: no images in {images_dir}")
    if not masks:
        raise DataError(f"{masks_key}: no mask files (.png, ...) in {masks_dir}")
    image_by_stem = _by_stem(images, problems, "duplicate_image_stem")
    mask_by_stem = _by_stem(masks, problems, "duplicate_mask_stem")
    if not image_by_stem.keys() & mask_by_stem.keys():
        raise DataError(f"{masks_key}: none of the {len(mask_by_stem)} masks in {masks_dir} is named like an image in "
                        f"{images_dir} (e.g. {next(iter(image_by_stem))}.png); a mask has its image's file stem")
    for stem in sorted(mask_by_stem.keys() - image_by_stem.keys()):
        problems.add("mask_without_image", f"{mask_by_stem[stem]}: no image named {stem}.* in {images_dir}")
    items = []
    for stem, image in image_by_stem.items():
        mask = mask_by_stem.get(stem)
        if mask is None:
            problems.add("image_without_mask", f"{image}: no mask named {stem}.* in {masks_dir}; left out")
            continue
        try:
            geometry = image_geometry(image)
        except ImageError as e:
            problems.add("unreadable_image", f"{first_line(e)}; left out")
            continue
        try:
            with open_checked(mask, None, header_only=True) as im:
                mask_size = im.size
        except ImageError as e:
            problems.add("unreadable_mask", f"{first_line(e)}; its image is left out")
            continue
        if mask_size != geometry[0]:
            problems.add("size_mismatch", f"{mask}: " + _size_message(image, "mask", mask_size, geometry))
            continue
        if mask.suffix.lower() in _LOSSY:
            problems.add("lossy_mask", f"{mask}: a JPEG mask; compression changes class ids at edges "
                                       "(counted as unknown ids), save masks as PNG")
        items.append(SegItem(image, mask, geometry[0]))
    return items


def _by_stem(paths: list[Path], problems: MaskProblems, kind: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in paths:
        if path.stem in found:
            problems.add(kind, f"{path}: same file stem as {found[path.stem]}; only the first is used")
        else:
            found[path.stem] = path
    return found


# ----------------------------------------------------------------------------------- targets

def load_target(item: SegItem, table: ClassTable, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """The item's training indices, int64 [H, W] (unknown ids and colours as ignore_index)."""
    return _target(item, table, max_pixels)[0]


def _target(item: SegItem, table: ClassTable, max_pixels: int | None) -> tuple[np.ndarray, SourceMask | None]:
    if item.coco:
        return rasterise(item), None
    source = read_mask(item.mask, table, max_pixels)
    if item.size is not None and source.ids.shape[::-1] != tuple(item.size):
        h, w = source.ids.shape
        raise MaskError(f"{item.mask}: mask is {w}x{h}, its image is {item.size[0]}x{item.size[1]}; left out")
    return table.lookup(source.ids), source


@dataclass
class TargetScan:
    """What decoding every target of a split found: the unusable items and the pixels per class."""

    bad: dict[str, str]  # image path -> reason
    problems: MaskProblems
    pixel_counts: np.ndarray  # int64 [C]


def scan_targets(items: Sequence[SegItem], table: ClassTable, max_pixels: int | None = MAX_PIXELS) -> TargetScan:
    """Decode every item's target once (a few threads), counting unknown ids/colours and class pixels."""

    def check(item: SegItem) -> tuple:
        # Only small summaries leave the thread: whole masks would pile up while the loop below catches up.
        try:
            indices, source = _target(item, table, max_pixels)
        except ImageError as e:
            return first_line(e), None, None
        kept = indices[indices != table.ignore_index]
        counts = np.bincount(kept.reshape(-1), minlength=table.num_classes)[: table.num_classes]
        return None, counts, None if source is None else (
            {} if source.colour else table.unknown_ids(source.ids), source.unknown_colours, source.transparent)

    problems = MaskProblems()
    total = np.zeros(table.num_classes, np.int64)
    bad: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for item, (error, counts, found) in zip(items, pool.map(check, items)):
            where = str(item.mask if item.mask is not None else item.image)
            if error is not None:
                kind = "bad_annotation" if item.coco else "unreadable_mask"
                problems.add(kind, f"{error}; its image is left out")
                bad[str(item.image)] = error
                continue
            total += counts
            if not counts.any():
                problems.add("mask_all_ignored", f"{where}: every pixel is ignore_index or unknown; nothing to learn")
            if found is None:
                continue
            unknown_ids, unknown_colours, transparent = found
            for source_id, n in unknown_ids.items():
                problems.count_unknown(problems.unknown_ids, source_id, n, where)
            for colour, n in unknown_colours.items():
                problems.count_unknown(problems.unknown_colours, colour, n, where)
            if transparent:
                problems.add("transparent_pixels", f"{where}: {transparent} fully transparent pixels read as ignore")
    return TargetScan(bad, problems, total)


def read_prediction(path: PathLike, num_classes: int, size: tuple[int, int] | None = None,
                    max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """A predicted mask (training indices, as `inference` writes them) as int64 [H, W]; MaskError when it
    is unreadable, has another size than `size` (w, h), or holds values outside 0..num_classes-1."""
    source = read_mask(path, None, max_pixels)
    ids = source.ids
    if size is not None and ids.shape[::-1] != tuple(size):
        raise MaskError(f"{path}: prediction is {ids.shape[1]}x{ids.shape[0]}, its image is {size[0]}x{size[1]}")
    outside = ids[(ids < 0) | (ids >= num_classes)]
    if outside.size:
        raise MaskError(f"{path}: holds class index {int(outside[0])}, the model has classes 0..{num_classes - 1}")
    return ids


# ------------------------------------------------------------------------------------- COCO

def load_coco(path: PathLike) -> dict:
    """A COCO JSON (images, annotations, categories) checked for shape; DataError names the problem."""
    from .formats import load_coco_json

    return load_coco_json(Path(path))


def coco_categories(data: dict) -> list[tuple[Any, str]]:
    """(id, name) of every category, sorted by id."""
    categories = [(c["id"], str(c["name"])) for c in data["categories"]]
    numeric = all(isinstance(i, (int, float)) for i, _ in categories)
    return sorted(categories, key=(lambda c: c[0]) if numeric else (lambda c: str(c[0])))


def coco_class_table(data: dict, ignore_index: int = 255) -> ClassTable:
    """The class table a COCO file implies: "background", then its categories by id (not "ignore")."""
    names = [name for _, name in coco_categories(data)
             if name.lower() not in IGNORE_CATEGORIES and name.lower() != BACKGROUND]
    return ClassTable.build([BACKGROUND, *names], ignore_index, key="COCO categories")


def read_coco_masks(images_dir: PathLike, json_path: PathLike, table: ClassTable, problems: MaskProblems,
                    data: dict | None = None) -> list[SegItem]:
    """COCO images with their annotations as SegItems (module docstring); problems are counted, the
    images that cannot be used left out. `data` is the loaded JSON (read from `json_path` if None)."""
    from .formats import coco_annotation_problem, coco_image_files

    json_path, images_dir = Path(json_path), Path(images_dir)
    data = load_coco(json_path) if data is None else data
    category_index = _category_classes(data, table)
    category_names = dict(coco_categories(data))
    fill = table.background if table.background is not None else table.ignore_index
    if table.background is None:
        problems.add("uncovered_pixels_ignored", f"{json_path}: no class is named 'background', so pixels no "
                                                 "annotation covers are ignored")
    listed: dict[Any, tuple[Path, tuple[int, int]]] = {}
    left_out: set[Any] = set()
    stems: dict[str, Path] = {}
    referenced = {(images_dir / str(entry["file_name"])).resolve() for entry in data["images"]}
    for where, entry, file, geometry in coco_image_files(data, images_dir, json_path, problems, image_geometry,
                                                         left_out, "; left out"):
        if "width" in entry and (entry.get("width"), entry.get("height")) != geometry[0]:
            problems.add("size_mismatch", f"{where}: " + _size_message(
                file, "JSON size", (entry.get("width"), entry.get("height")), geometry))
            left_out.add(entry["id"])
            continue
        if file.stem in stems:
            problems.add("duplicate_image_stem", f"{where}: {file} has the same file stem as {stems[file.stem]} "
                                                 "(masks are named by stem); left out")
            left_out.add(entry["id"])
            continue
        stems[file.stem] = file
        listed[entry["id"]] = (file, geometry[0])
    shapes: dict[Any, list] = {image_id: [] for image_id in listed}
    for i, ann in enumerate(data["annotations"]):
        where = f"{json_path}: annotations[{i}] (id {ann.get('id')})"
        what = coco_annotation_problem(ann)
        if what is not None:
            problems.add("bad_annotation", f"{where}: {what}")
            continue
        image_id = ann.get("image_id")
        if image_id not in listed:
            if image_id not in left_out:
                problems.add("annotation_without_image", f"{where}: image_id {image_id} is not in images")
            continue
        width, height = listed[image_id][1]
        crowd = bool(ann.get("iscrowd", 0))
        category = ann.get("category_id")
        value = category_index.get(category)
        if value is None:
            name = category_names.get(category)
            if name is None and not crowd:
                problems.add("bad_annotation", f"{where}: category_id {category!r} is not in categories; "
                                               "painted ignore")
            elif name is not None and name.lower() not in IGNORE_CATEGORIES and not crowd:
                problems.unmapped_classes[name] = problems.unmapped_classes.get(name, 0) + 1
            value = table.ignore_index
        if crowd:
            value = table.ignore_index
        segmentation, reason = _checked_segmentation(ann.get("segmentation"), width, height)
        if segmentation is None:
            box = _bbox_polygon(ann.get("bbox"))
            kind = "no_segmentation" if reason == "none" else "bad_annotation"
            problems.add(kind, f"{where}: {'no segmentation' if reason == 'none' else reason}; "
                               + ("its box is painted ignore" if box else "its pixels cannot be painted"))
            if box is None:
                continue
            segmentation, value = box, table.ignore_index
        shapes[image_id].append((value, segmentation))
    for path in list_images(images_dir):
        if path.resolve() not in referenced:
            problems.add("image_not_in_annotations", f"{path}: not in {json_path}; left out")
    return [SegItem(file, None, size, True, tuple(shapes[image_id]), fill)
            for image_id, (file, size) in sorted(listed.items(), key=lambda kv: str(kv[1][0]))]


def _category_classes(data: dict, table: ClassTable) -> dict[Any, int]:
    """category id -> training index: a class's explicit ids first, then the name (ignoring case)."""
    by_id = {i: k for k, e in enumerate(table.entries) if e.explicit_ids for i in e.ids}
    by_name = {e.name.lower(): k for k, e in enumerate(table.entries)}
    out = {}
    for category, name in coco_categories(data):
        if category in by_id:
            out[category] = by_id[category]
        elif name.lower() in by_name:
            out[category] = by_name[name.lower()]
    return out


def _checked_segmentation(segmentation: Any, width: int, height: int) -> tuple[Any, str]:
    """(the segmentation, "") when pycocotools can rasterise it, else (None, why); why "none" when absent."""
    if segmentation is None or (isinstance(segmentation, list) and not segmentation):
        return None, "none"
    if isinstance(segmentation, list):
        for k, polygon in enumerate(segmentation):
            if not (isinstance(polygon, list) and len(polygon) >= 6 and len(polygon) % 2 == 0
                    and all(_is_number(v) for v in polygon)):
                return None, (f"segmentation[{k}] must be a polygon [x1, y1, x2, y2, x3, y3, ...] of at least 3 "
                              "points")
        return segmentation, ""
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if size != [height, width]:
            return None, f"RLE size {size!r} is not the image's [height, width] [{height}, {width}]"
        if isinstance(counts, list):
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts) or \
                    sum(counts) != width * height:
                return None, f"RLE counts must be whole numbers >= 0 that sum to {width * height} (width x height)"
            return segmentation, ""
        if isinstance(counts, str) and counts:
            return segmentation, ""
        return None, "RLE counts must be a list of run lengths or a compressed string"
    return None, f"segmentation must be polygons (a list) or RLE (an object), got {type(segmentation).__name__}"


def _bbox_polygon(bbox: Any) -> list | None:
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)) or \
            bbox[2] <= 0 or bbox[3] <= 0:
        return None
    x, y, w, h = (float(v) for v in bbox)
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def coco_decode(rle: Any) -> np.ndarray:
    """pycocotools' mask.decode without its NumPy 2 DeprecationWarning about `copy` (noise, not a problem)."""
    import warnings

    from pycocotools import mask as coco_mask

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco_mask.decode(rle)


def decode_segmentation(segmentation: Any, width: int, height: int) -> np.ndarray:
    """A COCO segmentation (polygons, RLE counts list, or compressed RLE) -> bool [H, W]; MaskError if bad."""
    from pycocotools import mask as coco_mask

    try:
        if isinstance(segmentation, list):
            rle = coco_mask.merge(coco_mask.frPyObjects([[float(v) for v in p] for p in segmentation], height, width))
        elif isinstance(segmentation.get("counts"), list):
            rle = coco_mask.frPyObjects(segmentation, height, width)
        else:
            counts = segmentation["counts"]
            rle = {"size": [height, width], "counts": counts.encode() if isinstance(counts, str) else counts}
        decoded = coco_decode(rle)
    except (TypeError, ValueError, KeyError, IndexError, UnicodeError) as e:
        raise MaskError(f"COCO segmentation cannot be decoded ({first_line(e)})") from e
    if decoded.shape[:2] != (height, width):
        raise MaskError(f"COCO segmentation decodes to {decoded.shape[1]}x{decoded.shape[0]}, not {width}x{height}")
    return decoded.astype(bool)


def rasterise(item: SegItem) -> np.ndarray:
    """A COCO item's training indices, int64 [H, W]: shapes painted in order over `fill`."""
    width, height = item.size
    canvas = np.full((height, width), item.fill, np.int64)
    for value, segmentation in item.shapes:
        try:
            canvas[decode_segmentation(segmentation, width, height)] = value
        except MaskError as e:
            raise MaskError(f"{item.image}: {e}") from e
    return canvas


# ------------------------------------------------------------------------------------- writing

def mask_png_bytes(indices: np.ndarray, table: ClassTable) -> bytes:
    """Training indices as PNG bytes: a palette PNG with the class colours when every value fits in 8
    bits, else a 16-bit single-channel PNG."""
    import io

    indices = np.asarray(indices)
    buffer = io.BytesIO()
    if indices.size == 0 or (int(indices.min()) >= 0 and int(indices.max()) < 256):
        image = Image.fromarray(indices.astype(np.uint8))
        image.putpalette(table.palette())  # an L image becomes P, its values the palette indices
    elif int(indices.min()) >= 0 and int(indices.max()) < 65536:
        image = Image.fromarray(indices.astype(np.uint16))
    else:
        raise DataError(f"mask values {int(indices.min())}..{int(indices.max())} do not fit a 16-bit PNG")
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_mask_png(path: PathLike, indices: np.ndarray, table: ClassTable) -> Path:
    """Write training indices as a PNG mask (mask_png_bytes), atomically."""
    from ..io import atomic_write_bytes

    return atomic_write_bytes(path, mask_png_bytes(indices, table))


# ------------------------------------------------------------------------------------- drawing

def colourise(indices: np.ndarray, table: ClassTable) -> np.ndarray:
    """Training indices [H, W] -> uint8 RGB [H, W, 3] in the class colours (ignore_index in its colour,
    any other value black)."""
    indices = np.asarray(indices)
    lut = np.zeros((max(table.num_classes, 1), 3), np.uint8)
    lut[: table.num_classes] = table.colours
    out = np.zeros(indices.shape + (3,), np.uint8)
    known = (indices >= 0) & (indices < table.num_classes)
    out[known] = lut[indices[known]]
    out[indices == table.ignore_index] = table.ignore_colour()
    return out


def overlay(image: Image.Image | np.ndarray, indices: np.ndarray, table: ClassTable, alpha: float = 0.5) -> np.ndarray:
    """The image (RGB, same size as the mask) with every pixel that is not background blended with its
    class colour; uint8 [H, W, 3]."""
    pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32)
    indices = np.asarray(indices)
    if pixels.shape[:2] != indices.shape:
        raise ValueError(f"image {pixels.shape[1]}x{pixels.shape[0]} and mask {indices.shape[1]}x{indices.shape[0]} "
                         "differ in size")
    shown = indices != table.background if table.background is not None else np.ones(indices.shape, bool)
    out = pixels.copy()
    out[shown] = (1 - alpha) * pixels[shown] + alpha * colourise(indices, table)[shown].astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
