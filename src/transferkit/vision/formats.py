"""Read detection labels in KITTI, COCO or YOLO form into `DetectionDataset` (writers: data/convert.py).

Coordinates: readers return continuous pixel boxes x1, y1, x2, y2 (see data/boxes.py). KITTI boxes are
taken as given; COCO [x, y, w, h] becomes [x, y, x + w, y + h]; YOLO's normalised cx, cy, w, h are
scaled by the image size, which is read from the image header only.

Classes: `classes` is the trained class list (output order). Label names match it ignoring case, after
`class_mapping` (source name -> trained name, keys also matched ignoring case). An object whose name
maps to no class is dropped and counted in `problems.unmapped_classes`; if objects exist but none maps,
the reader raises DataError, so a case or spelling mismatch can never train or score as "no objects".
With `classes=None`: KITTI uses every name found, sorted; YOLO and COCO use their declared class list
(`names`, categories by id), so class ids survive a round trip. KITTI `DontCare` (any case, also as a
mapping target) and COCO `iscrowd` boxes become `ImageBoxes.ignore` regions.

Nothing is skipped silently. Each problem is counted in `dataset.problems` with "file:line: message"
examples (COCO: "file: annotations[i]"), under one of these kinds:
  rows:   wrong_field_count, non_numeric, inverted_box, zero_area_box, outside_image,
          clipped (kept, clipped to the image), missing_score (a row without score among predictions),
          unknown_class_id (YOLO), unknown_category / bad_annotation / annotation_without_image (COCO)
  files:  missing_label_file (image kept with no objects), label_without_image, label_not_utf8 and
          unreadable_label (the image is left out: its objects are unknown), unreadable_image,
          image_missing (COCO), size_mismatch (COCO; the header wins), duplicate_image_stem
  names:  case_insensitive_match (once per distinct label name), class_without_objects (once per class
          of an explicitly given `classes` list that no object in these labels has; not counted when
          the labels hold no objects at all, which the caller reports)
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import yaml

from ..data.names import class_name_problem
from ..errors import DataError, first_line
from .boxes import DataProblems, DetectionDataset, ImageBoxes
from .images import ImageError, image_size, list_images

FORMATS = ("kitti", "coco", "yolo")
DONT_CARE = "dontcare"
_CLIP_TOLERANCE = 1e-3  # px; smaller overshoots are round-off from normalised formats, clipped silently
PathLike = str | os.PathLike


@dataclass
class _RawObject:
    """One label row before class resolution."""

    name: str
    box: tuple[float, float, float, float]
    where: str  # "file:line" for messages
    score: float | None = None
    ignore: bool = False  # COCO iscrowd


@dataclass
class _RawImage:
    path: Path
    width: int
    height: int
    objects: list[_RawObject] = field(default_factory=list)


# ----------------------------------------------------------------------------------------- readers

def read_dataset(fmt: str, images: PathLike, labels: PathLike, classes: list[str] | None = None,
                 class_mapping: dict[str, str] | None = None,
                 names: list[str] | PathLike | None = None) -> DetectionDataset:
    """Read any format; `labels` is the labels folder (KITTI, YOLO) or the annotation JSON (COCO)."""
    if fmt == "kitti":
        return read_kitti(images, labels, classes, class_mapping)
    if fmt == "coco":
        return read_coco(images, labels, classes, class_mapping)
    if fmt == "yolo":
        if names is None:
            raise DataError("YOLO labels hold class ids only: pass names (a list, a names .txt or a data.yaml)")
        return read_yolo(images, labels, names, classes, class_mapping)
    raise DataError(f"unknown label format '{fmt}': use one of {', '.join(FORMATS)}")


def read_kitti(images_dir: PathLike, labels_dir: PathLike, classes: list[str] | None = None,
               class_mapping: dict[str, str] | None = None) -> DetectionDataset:
    """KITTI: one `<image stem>.txt` per image, 15 fields per object, a 16th is a score (predictions).

    A class with spaces is written `traffic_light` in KITTI rows (convert.write_kitti); given `classes`,
    such a name is read as its class unless class_mapping or another class claims it."""
    class_mapping = _kitti_spaced_names(classes, class_mapping)
    problems = DataProblems()
    raw = []
    for image, width, height, label in _paired_images(images_dir, labels_dir, problems):
        rows = [] if label is None else _read_lines(label, problems)
        if rows is None:
            continue
        found = (_kitti_row(line, f"{label}:{n}", width, height, problems) for n, line in rows)
        raw.append(_RawImage(image, width, height, [o for o in found if o is not None]))
    return _assemble(raw, classes, class_mapping, problems, str(labels_dir))


def _kitti_spaced_names(classes: list[str] | None, class_mapping: dict[str, str] | None) -> dict[str, str] | None:
    """class_mapping plus {'traffic_light': 'traffic light'} for each class with whitespace in `classes`."""
    if not classes or not any(len(str(c).split()) > 1 for c in classes):
        return class_mapping
    mapping = dict(class_mapping or {})
    taken = {str(k).lower() for k in mapping} | {str(c).lower() for c in classes}
    for name in classes:
        written = "_".join(str(name).split())
        if written != name and written.lower() not in taken:
            mapping[written] = str(name)
            taken.add(written.lower())
    return mapping


def read_yolo(images_dir: PathLike, labels_dir: PathLike, names: list[str] | PathLike,
              classes: list[str] | None = None, class_mapping: dict[str, str] | None = None) -> DetectionDataset:
    """YOLO: one `<image stem>.txt` per image, rows `id cx cy w h [score]` normalised to 0..1."""
    # labelImg writes its names file, classes.txt, into the labels folder
    skip = frozenset({"classes.txt"} | (set() if isinstance(names, (list, tuple)) else {Path(names).name}))
    names = read_names(names)
    problems = DataProblems()
    raw = []
    for image, width, height, label in _paired_images(images_dir, labels_dir, problems, skip):
        rows = [] if label is None else _read_lines(label, problems)
        if rows is None:
            continue
        found = (_yolo_row(line, f"{label}:{n}", width, height, names, problems) for n, line in rows)
        raw.append(_RawImage(image, width, height, [o for o in found if o is not None]))
    return _assemble(raw, classes, class_mapping, problems, str(labels_dir), declared=names)


def read_coco(images_dir: PathLike, annotation_json: PathLike, classes: list[str] | None = None,
              class_mapping: dict[str, str] | None = None) -> DetectionDataset:
    """COCO detection JSON; `file_name` is relative to `images_dir`; an optional `score` per annotation."""
    path, images_dir, problems = Path(annotation_json), Path(images_dir), DataProblems()
    data = load_coco_json(path)
    categories = {c["id"]: str(c["name"]) for c in data["categories"]}
    by_id: dict[object, _RawImage] = {}
    left_out: set[object] = set()  # images already counted as missing/unreadable: skip their annotations
    for where, entry, file, (width, height) in coco_image_files(data, images_dir, path, problems, image_size, left_out):
        if "width" in entry and (entry.get("width"), entry.get("height")) != (width, height):
            problems.add("size_mismatch", f"{where}: JSON says {entry.get('width')}x{entry.get('height')}, "
                                          f"the image header {width}x{height}; the header is used")
        by_id[entry["id"]] = _RawImage(file, width, height)
    for i, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{i}] (id {ann.get('id')})"
        what = coco_annotation_problem(ann)
        if what is not None:
            problems.add("bad_annotation", f"{where}: {what}")
            continue
        image = by_id.get(ann.get("image_id"))
        if image is None:
            if ann.get("image_id") not in left_out:
                problems.add("annotation_without_image", f"{where}: image_id {ann.get('image_id')} is not in images")
            continue
        bbox, score = ann.get("bbox"), ann.get("score")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox))):
            problems.add("bad_annotation", f"{where}: bbox must be 4 numbers [x, y, w, h], got {bbox!r}")
            continue
        if score is not None and not _is_number(score):
            problems.add("bad_annotation", f"{where}: score must be a number, got {score!r}")
            continue
        crowd = bool(ann.get("iscrowd", 0))
        name = categories.get(ann.get("category_id"))
        if name is None and not crowd:
            problems.add("unknown_category", f"{where}: category_id {ann.get('category_id')} is not in categories")
            continue
        x, y, w, h = map(float, bbox)
        box = _checked_box(x, y, x + w, y + h, image.width, image.height, where, problems)
        if box is not None:
            image.objects.append(_RawObject(name or "", box, where, score, ignore=crowd))
    ids = sorted(categories) if all(isinstance(k, int) for k in categories) else sorted(categories, key=str)
    declared = [categories[k] for k in ids]
    return _assemble(list(by_id.values()), classes, class_mapping, problems, str(path), declared)


def coco_image_files(data: dict, images_dir: Path, json_path: Path, problems: DataProblems,
                     measure: Callable[[Path], Any], left_out: set, unreadable_note: str = "") -> Iterator[tuple]:
    """(where, entry, file, measure(file)) for each COCO `images` entry that can be used, in order.

    An id listed twice (the first is used), a file not on disk and one that does not read (ImageError from
    `measure`) are counted in `problems`; the ids of the last two go into `left_out`, so their annotations are
    skipped quietly. A caller that refuses an image for its own reasons adds its id to `left_out` too."""
    seen: set = set()
    for i, entry in enumerate(data["images"]):
        where, file = f"{json_path}: images[{i}]", images_dir / str(entry["file_name"])
        if entry["id"] in seen:
            problems.add("bad_annotation", f"{where}: image id {entry['id']} is listed twice; the first is used")
            continue
        seen.add(entry["id"])
        if not file.is_file():
            problems.add("image_missing", f"{where}: {file} is not on disk")
            left_out.add(entry["id"])
            continue
        try:
            measured = measure(file)
        except ImageError as e:
            problems.add("unreadable_image", f"{where}: {first_line(e)}{unreadable_note}")
            left_out.add(entry["id"])
            continue
        yield where, entry, file, measured


def read_names(names: list[str] | PathLike) -> list[str]:
    """YOLO class names from a list, a names .txt (one per line) or a data.yaml with `names:`."""
    if isinstance(names, (list, tuple)):
        return _checked_names([str(n) for n in names], "YOLO names")
    path = Path(names)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"YOLO names file {path} cannot be read ({first_line(e)}); pass a UTF-8 text file") from e
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            document = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
            raise DataError(f"{path}{at}: not valid YAML ({getattr(e, 'problem', None) or first_line(e)}); "
                            "fix the file or pass a names .txt with one class per line") from None
        found = document.get("names") if isinstance(document, dict) else None
        if isinstance(found, dict) and set(found) == set(range(len(found))):
            found = [found[i] for i in range(len(found))]
        if not isinstance(found, list) or not found:
            raise DataError(f"{path}: expected `names:` as a list, or a dict with keys 0..N-1")
        for i, name in enumerate(found):
            if not isinstance(name, (str, int, float)) or isinstance(name, bool) or not str(name).strip():
                raise DataError(f"{path}: names[{i}] is {name!r}; each class name must be a plain word")
        return _checked_names([str(n) for n in found], f"{path}: names")
    # Lines end at "\n" only, as YOLO tools read them (str.splitlines would also break at \f, \x1c, U+2028 ...).
    lines = text.replace("\r\n", "\n").rstrip().split("\n") if text.strip() else []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise DataError(f"{path}:{number}: empty line inside the names list would shift every later class id")
        problem = class_name_problem(line.strip())
        if problem:
            raise DataError(f"{path}:{number}: class name {line.strip()!r} {problem}")
    if not lines:
        raise DataError(f"YOLO names file {path} is empty: write one class name per line")
    return [line.strip() for line in lines]


def _checked_names(names: list[str], where: str) -> list[str]:
    """`names` when every one can be a class name; DataError naming `where`[i] otherwise."""
    for i, name in enumerate(names):
        problem = class_name_problem(name)
        if problem:
            raise DataError(f"{where}[{i}] is {name!r}, which {problem}")
    return names


def _kitti_row(line: str, where: str, width: int, height: int, problems: DataProblems) -> _RawObject | None:
    fields = line.split()
    if len(fields) not in (15, 16):
        problems.add("wrong_field_count", f"{where}: {len(fields)} fields, KITTI rows have 15 (16 with a score)")
        return None
    values = _numbers(fields, 1, where, problems)
    if values is None:
        return None
    box = _checked_box(*values[3:7], width, height, where, problems)
    if box is None:
        return None
    return _RawObject(fields[0], box, where, values[14] if len(fields) == 16 else None)


def _yolo_row(line: str, where: str, width: int, height: int, names: list[str],
              problems: DataProblems) -> _RawObject | None:
    fields = line.split()
    if len(fields) not in (5, 6):
        problems.add("wrong_field_count", f"{where}: {len(fields)} fields, YOLO rows have 5 (6 with a score)")
        return None
    values = _numbers(fields, 0, where, problems)
    if values is None:
        return None
    if values[0] != int(values[0]) or not 0 <= values[0] < len(names):
        problems.add("unknown_class_id", f"{where}: class id {fields[0]} is not in 0..{len(names) - 1}")
        return None
    cx, cy, w, h = values[1:5]
    box = _checked_box((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height,
                       width, height, where, problems)
    if box is None:
        return None
    return _RawObject(names[int(values[0])], box, where, values[5] if len(fields) == 6 else None)


def _numbers(fields: list[str], start: int, where: str, problems: DataProblems) -> list[float] | None:
    """fields[start:] as floats; the first that is not a finite number is reported by column (1-based)."""
    values = []
    for column, text in enumerate(fields[start:], start + 1):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            problems.add("non_numeric", f"{where}: column {column} '{text}' is not a finite number")
            return None
        values.append(value)
    return values


def _checked_box(x1: float, y1: float, x2: float, y2: float, width: int, height: int, where: str,
                 problems: DataProblems) -> tuple[float, float, float, float] | None:
    """The box clipped to the image, or None (reported) when it is inverted, empty or wholly outside."""
    if x2 < x1 or y2 < y1:
        problems.add("inverted_box", f"{where}: x2 < x1 or y2 < y1 in box {x1:g},{y1:g},{x2:g},{y2:g}")
        return None
    if x2 == x1 or y2 == y1:
        problems.add("zero_area_box", f"{where}: box {x1:g},{y1:g},{x2:g},{y2:g} has zero area")
        return None
    clipped = (min(max(x1, 0.0), width), min(max(y1, 0.0), height),
               min(max(x2, 0.0), width), min(max(y2, 0.0), height))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        problems.add("outside_image", f"{where}: box {x1:g},{y1:g},{x2:g},{y2:g} lies outside the "
                                      f"{width}x{height} image")
        return None
    if max(abs(a - b) for a, b in zip(clipped, (x1, y1, x2, y2))) > _CLIP_TOLERANCE:
        problems.add("clipped", f"{where}: box {x1:g},{y1:g},{x2:g},{y2:g} clipped to the {width}x{height} image")
    return clipped


def _paired_images(images_dir: PathLike, labels_dir: PathLike, problems: DataProblems,
                   skip: frozenset[str] = frozenset()) -> Iterator[tuple[Path, int, int, Path | None]]:
    """(image, width, height, label file or None) per readable image; labels match by file stem."""
    images, labels_dir = list_images(images_dir), Path(labels_dir)
    if not labels_dir.is_dir():
        raise DataError(f"label folder {labels_dir} does not exist: pass the folder of .txt label files")
    labels = {p.stem: p for p in sorted(labels_dir.glob("*.txt"))
              if not p.name.startswith(".") and p.name not in skip}
    if not images:
        raise DataError(f"no images in {images_dir}: expected image files (.jpg, .png, ...) next to {labels_dir}")
    by_stem: dict[str, Path] = {}
    for image in images:
        if image.stem in by_stem:
            problems.add("duplicate_image_stem", f"{image}: same stem as {by_stem[image.stem]}; only the first is used")
        else:
            by_stem[image.stem] = image
    if not labels:
        raise DataError(f"label folder {labels_dir} holds no .txt label files: pass the folder of "
                        f"<image name>.txt files that belong to {images_dir}")
    if not by_stem.keys() & labels.keys():
        raise DataError(f"none of the {len(labels)} .txt files in {labels_dir} is named like an image in "
                        f"{images_dir} (e.g. {next(iter(by_stem))}.txt): check the two folders belong together")
    for stem in sorted(labels.keys() - by_stem.keys()):
        problems.add("label_without_image", f"{labels[stem]}: no image named {stem}.* in {images_dir}")
    for stem, image in by_stem.items():
        try:
            width, height = image_size(image)
        except ImageError as e:
            problems.add("unreadable_image", first_line(e))
            continue
        if stem not in labels:
            problems.add("missing_label_file", f"{image}: no {stem}.txt in {labels_dir}; read as no objects")
        yield image, width, height, labels.get(stem)


def _read_lines(path: Path, problems: DataProblems) -> list[tuple[int, str]] | None:
    """Non-blank (line number, text) pairs, or None (reported) when the file is unreadable or not UTF-8."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        problems.add("label_not_utf8", f"{path}: byte {e.start}: not UTF-8 ({e.reason}); "
                                       "re-save it as UTF-8. Its image is left out")
        return None
    except OSError as e:
        problems.add("unreadable_label", f"{path}: {first_line(e)}; its image is left out")
        return None
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def load_coco_json(path: Path, kind: str = "detection", example: str = "instances_*.json",
                   not_results: str = "a results list of detections is not accepted here") -> dict:
    """A COCO JSON file checked for its images / annotations / categories lists; DataError naming the file.

    `kind`, `example` and `not_results` word the messages for the file a task reads (detection, keypoints)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise DataError(f"COCO {'annotation' if kind == 'detection' else kind} file {path} does not exist: pass the "
                        f"{example} file") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); fix the file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"COCO {'annotation' if kind == 'detection' else kind} file {path} cannot be read "
                        f"({first_line(e)})") from None
    if not (isinstance(data, dict) and all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories"))):
        raise DataError(f"{path}: a COCO {kind} file is an object with lists 'images', 'annotations' and "
                        f"'categories' ({not_results})")
    for key, needed in (("images", ("id", "file_name")), ("annotations", ()), ("categories", ("id", "name"))):
        for i, entry in enumerate(data[key]):
            if not isinstance(entry, dict) or any(k not in entry for k in needed):
                raise DataError(f"{path}: {key}[{i}] must be an object with keys {', '.join(needed) or '...'}")
            if "id" in needed and not is_coco_id(entry["id"]):
                raise DataError(f"{path}: {key}[{i}].id must be a number or a string, got {entry['id']!r}")
    for i, entry in enumerate(data["categories"]):
        if not isinstance(entry["name"], str) or not entry["name"].strip():
            raise DataError(f"{path}: categories[{i}].name must be a non-empty string, got {entry['name']!r}")
        problem = class_name_problem(entry["name"])
        if problem:
            raise DataError(f"{path}: categories[{i}] (id {entry['id']!r}) is named {entry['name']!r}, which {problem}; "
                            "fix the name in the file")
    return data


def coco_annotation_problem(ann: dict) -> str | None:
    """What is wrong with a COCO annotation's ids or iscrowd flag (None when they are fine)."""
    bad_ids = [k for k in ("image_id", "category_id") if k in ann and not is_coco_id(ann[k])]
    if bad_ids:
        return f"{bad_ids[0]} must be a number or a string, got {ann[bad_ids[0]]!r}"
    if ann.get("iscrowd") not in (None, 0, 1):
        return f"iscrowd must be 0 or 1, got {ann.get('iscrowd')!r}"
    return None


def is_coco_id(value: object) -> bool:
    """COCO ids are numbers or strings (JSON scalars that can key a dict); never lists, objects or booleans."""
    return isinstance(value, (int, float, str)) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ------------------------------------------------------------------------------ class resolution

def _assemble(raw: list[_RawImage], classes: list[str] | None, class_mapping: dict[str, str] | None,
              problems: DataProblems, source: str, declared: list[str] | None = None) -> DetectionDataset:
    """Resolve label names to class indices (see the module docstring) and build the dataset."""
    explicit = classes is not None
    if classes is not None:
        _checked_names([str(c) for c in classes], "classes")
    for key, value in (class_mapping or {}).items():
        problem = class_name_problem(str(key)) or class_name_problem(str(value))
        if problem:
            raise DataError(f"class_mapping {{{key!r}: {value!r}}}: a name {problem}")
    for name in sorted({o.name for image in raw for o in image.objects}):  # label rows: KITTI names, COCO, YOLO
        problem = class_name_problem(name)
        if problem:
            where = next(o.where for image in raw for o in image.objects if o.name == name)
            raise DataError(f"{where}: label name {name!r} {problem}; fix the label file")
    mapping: dict[str, tuple[str, str]] = {}  # lower-case source name -> (key as written, trained name)
    for key, value in (class_mapping or {}).items():
        if key.lower() in mapping and mapping[key.lower()][1].lower() != str(value).lower():
            raise DataError(f"class_mapping has '{mapping[key.lower()][0]}' and '{key}' (same ignoring case) "
                            "mapped to different classes")
        mapping[key.lower()] = (key, str(value))

    def target(name: str) -> str:
        return mapping.get(name.lower(), (name, name))[1]

    objects = [o for image in raw for o in image.objects if not o.ignore and target(o.name).lower() != DONT_CARE]
    if classes is None:
        if declared is None:
            classes = sorted(_unique_ignoring_case(target(o.name) for o in objects), key=lambda s: (s.lower(), s))
        else:
            classes = _unique_ignoring_case(target(n) for n in declared if target(n).lower() != DONT_CARE)
    classes = [str(c) for c in classes]
    if len(_unique_ignoring_case(classes)) != len(classes):
        raise DataError(f"classes {classes} has names that differ only in case; names are matched ignoring case")
    index = {c.lower(): i for i, c in enumerate(classes)}
    for key, value in mapping.values():
        if value.lower() not in index and value.lower() != DONT_CARE:
            raise DataError(f"class_mapping maps '{key}' to '{value}', which is not in classes {classes}")

    scored = any(o.score is not None for o in objects)
    noticed: set[str] = set()
    items, mapped = [], 0
    for image in raw:
        boxes, labels, scores, ignore = [], [], [], []
        for o in image.objects:
            name = target(o.name)
            if o.ignore or name.lower() == DONT_CARE:
                ignore.append(o.box)
                continue
            i = index.get(name.lower())
            if i is None:
                problems.unmapped_classes[o.name] = problems.unmapped_classes.get(o.name, 0) + 1
                continue
            if scored and o.score is None:
                problems.add("missing_score", f"{o.where}: no score, but other rows are scored predictions")
                continue
            as_written = mapping[o.name.lower()][0] if o.name.lower() in mapping else o.name
            if (as_written != o.name or name != classes[i]) and o.name not in noticed:
                noticed.add(o.name)
                problems.add("case_insensitive_match",
                             f"{o.where}: label '{o.name}' counted as class '{classes[i]}' (names match ignoring case)")
            boxes.append(o.box)
            labels.append(i)
            scores.append(o.score)
        mapped += len(boxes)
        items.append(ImageBoxes(image.path, np.array(boxes, np.float32), labels, scores if scored else None,
                                np.array(ignore, np.float32), image.width, image.height))
    if objects and not mapped:
        found = ", ".join(f"{n} ({c})" for n, c in Counter(o.name for o in objects).most_common(20))
        if not classes:
            raise DataError(f"{source}: the class list is empty, so none of the {len(objects)} objects here can be "
                            f"used (no objects in the training labels?). Label names found: {found}. Set the classes")
        raise DataError(f"{source}: none of the {len(objects)} objects has a class in {classes}. Label names found: "
                        f"{found}. Set the classes, or a class_mapping from these names (case is ignored)")
    if explicit and mapped:
        used = {int(label) for item in items for label in item.labels}
        for i, name in enumerate(classes):
            if i not in used:
                problems.add("class_without_objects", f"{source}: no object of class '{name}' in these labels; "
                                                      "it cannot be learned from them, and has no AP on them")
    return DetectionDataset(classes, items, problems)


def _unique_ignoring_case(names: Iterable[str]) -> list[str]:
    seen: dict[str, str] = {}
    for name in names:
        seen.setdefault(name.lower(), name)
    return list(seen.values())
