"""Write a DetectionDataset as KITTI, COCO or YOLO; split off a validation set; convert between formats;
and summarise a dataset for the terminal."""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import yaml

from ..errors import DataError
from ..io import atomic_write_json, atomic_write_text
from .boxes import DetectionDataset, ImageBoxes
from .formats import FORMATS, PathLike, read_dataset
from .images import image_size

SPLIT_MODES = ("random", "sequence")
BOX_SIZE_BINS = (16, 32, 64, 128, 256)  # px edges of the box width/height histogram
BOX_SIZE_LABELS = ("<16", "16-32", "32-64", "64-128", "128-256", ">=256")



def write_kitti(dataset: DetectionDataset, labels_dir: PathLike) -> dict:
    """One `<image stem>.txt` per image (empty when it has no objects); ignore regions as DontCare rows.

    KITTI rows are space-separated, so a class name's spaces are written as '_' (`traffic light` ->
    `traffic_light`, KITTI's own `Person_sitting` style); read_kitti given the class list maps them back.
    The report's `kitti_names` lists each class written under another name."""
    names = kitti_names(dataset.classes)
    labels_dir = Path(labels_dir)
    for item in _unique_names(dataset, by_stem=True):
        rows = []
        for k, (box, label) in enumerate(zip(item.boxes, item.labels)):
            row = f"{names[label]} 0.00 0 0.00 {_fmt_box(box)} 0.00 0.00 0.00 0.00 0.00 0.00 0.00"
            rows.append(row if item.scores is None else f"{row} {_fmt(item.scores[k], 6)}")
        rows += [f"DontCare -1 -1 -10 {_fmt_box(box)} -1 -1 -1 -1000 -1000 -1000 -10" for box in item.ignore]
        atomic_write_text(labels_dir / f"{item.image.stem}.txt", "".join(r + "\n" for r in rows))
    renamed = {c: n for c, n in zip(dataset.classes, names) if c != n}
    return {"label_files": len(dataset.items), **({"kitti_names": renamed} if renamed else {})}


def kitti_names(classes: list[str]) -> list[str]:
    """The name each class has in KITTI rows: whitespace runs become '_'. Refuses an empty name and two
    classes that would share a KITTI name (readers match names ignoring case)."""
    names, seen = [], {}
    for name in classes:
        written = "_".join(str(name).split())
        if not written:
            raise DataError(f"class {name!r} is empty or only spaces; KITTI rows need a name")
        other = seen.get(written.lower())
        if other is not None:
            raise DataError(f"classes {other!r} and {name!r} would both be written as '{written}' in KITTI labels "
                            "(spaces become '_', case is ignored); rename one of them (data.target_class_mapping)")
        seen[written.lower()] = name
        names.append(written)
    return names


def write_coco(dataset: DetectionDataset, json_path: PathLike) -> dict:
    """COCO detection JSON; category ids are class index + 1, ignore regions are iscrowd=1 annotations of
    category 0 'DontCare' (added only when there are ignore regions). `file_name` is the image's name."""
    categories = [{"id": i + 1, "name": name, "supercategory": "none"} for i, name in enumerate(dataset.classes)]
    images, annotations = [], []

    def annotate(image_id: int, box: np.ndarray, category_id: int, crowd: int) -> dict:
        x1, y1, x2, y2 = (round(float(v), 4) for v in box)
        annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                            "bbox": [x1, y1, round(x2 - x1, 4), round(y2 - y1, 4)],
                            "area": round((x2 - x1) * (y2 - y1), 4), "iscrowd": crowd})
        return annotations[-1]

    for image_id, item in enumerate(_unique_names(dataset, by_stem=False), 1):
        width, height = _size(item)
        images.append({"id": image_id, "file_name": item.image.name, "width": width, "height": height})
        for k, (box, label) in enumerate(zip(item.boxes, item.labels)):
            ann = annotate(image_id, box, int(label) + 1, 0)
            if item.scores is not None:
                ann["score"] = round(float(item.scores[k]), 6)
        for box in item.ignore:
            annotate(image_id, box, 0, 1)
    if any(a["iscrowd"] for a in annotations):
        categories.insert(0, {"id": 0, "name": "DontCare", "supercategory": "ignore"})
    document = {"images": images, "annotations": annotations, "categories": categories}
    atomic_write_text(json_path, json.dumps(document) + "\n")
    return {"images": len(images), "annotations": len(annotations)}


def write_yolo(dataset: DetectionDataset, labels_dir: PathLike, names_path: PathLike) -> dict:
    """`<image stem>.txt` rows `id cx cy w h [score]` (normalised), and the class names: one per line, or
    `names:` when `names_path` ends in .yaml. YOLO has no ignore regions: they are dropped and counted."""
    labels_dir, names_path = Path(labels_dir), Path(names_path)
    dropped = 0
    for item in _unique_names(dataset, by_stem=True):
        width, height = _size(item)
        rows = []
        for k, ((x1, y1, x2, y2), label) in enumerate(zip(item.boxes.astype(np.float64), item.labels)):
            values = ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height)
            row = f"{int(label)} " + " ".join(_fmt(v, 8) for v in values)
            rows.append(row if item.scores is None else f"{row} {_fmt(item.scores[k], 6)}")
        dropped += len(item.ignore)
        atomic_write_text(labels_dir / f"{item.image.stem}.txt", "".join(r + "\n" for r in rows))
    if names_path.suffix.lower() in (".yaml", ".yml"):
        atomic_write_text(names_path, yaml.safe_dump({"nc": len(dataset.classes), "names": dataset.classes}))
    else:
        atomic_write_text(names_path, "".join(f"{name}\n" for name in dataset.classes))
    return {"label_files": len(dataset.items), "ignore_regions_dropped": dropped}


def _unique_names(dataset: DetectionDataset, by_stem: bool) -> list[ImageBoxes]:
    """The items, refusing two images that would write the same label file / file_name."""
    seen: dict[str, Path] = {}
    for item in dataset.items:
        key = item.image.stem if by_stem else item.image.name
        if key in seen:
            raise DataError(f"images {seen[key]} and {item.image} would share the label file name '{key}': "
                            "rename one of them")
        seen[key] = item.image
    return dataset.items


def _size(item: ImageBoxes) -> tuple[int, int]:
    if item.width is not None and item.height is not None:
        return item.width, item.height
    return image_size(item.image)


def _fmt(value: float, decimals: int) -> str:
    """Shortest fixed-point text with at most `decimals` decimals: 12.5, 0, 3.1416."""
    text = f"{float(value):.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _fmt_box(box: np.ndarray) -> str:
    return " ".join(_fmt(v, 4) for v in box)


# ------------------------------------------------------------------------------ split and convert

def split_dataset(dataset: DetectionDataset, val_percent: float, mode: str = "random",
                  seed: int = 0) -> tuple[DetectionDataset, DetectionDataset]:
    """(train, val) with `val_percent` (0-100) of the images in val, both in the original order.

    "random" draws val with `seed`; "sequence" takes the last images in natural name order (frame_9
    before frame_10), so frames of a video do not leak between the splits. Both share the problems."""
    if mode not in SPLIT_MODES:
        raise DataError(f"split mode '{mode}' is unknown: use one of {', '.join(SPLIT_MODES)}")
    _check_percent(val_percent)
    count = len(dataset.items)
    n_val = round(count * val_percent / 100)
    if val_percent > 0:
        if count < 2:
            raise DataError(f"cannot split {count} image into train and val: add images or set val_split to 0")
        n_val = min(max(n_val, 1), count - 1)  # a requested split never leaves either side empty
    if mode == "random":
        order = list(range(count))
        random.Random(seed).shuffle(order)
    else:
        order = sorted(range(count), key=lambda i: _natural_key(str(dataset.items[i].image)))
    val_ids = set(order[count - n_val:])
    parts = ([it for i, it in enumerate(dataset.items) if i not in val_ids],
             [it for i, it in enumerate(dataset.items) if i in val_ids])
    return tuple(DetectionDataset(list(dataset.classes), part, dataset.problems) for part in parts)


def convert_dataset(src_format: str, images: PathLike, labels: PathLike, dst_format: str, dst_dir: PathLike,
                    *, names: list[str] | PathLike | None = None, classes: list[str] | None = None,
                    class_mapping: dict[str, str] | None = None, val_split: float = 0.0,
                    split_mode: str = "random", seed: int = 0) -> dict:
    """Read one dataset, write it to the empty folder `dst_dir` in `dst_format`, and return its report.

    `labels` is the labels folder (KITTI, YOLO) or the annotation JSON (COCO); `names` the YOLO class names.
    `val_split` is a PERCENT of the images (0-100, as in TAO specs); 0 writes only train. Layout:
      kitti / yolo: dst/train/{images,labels}/ (+ dst/val/...), yolo also names.txt and data.yaml
      coco:         dst/train/images/ + dst/train.json (+ dst/val/images/, dst/val.json)
    Images are hard-linked (no extra disk, instant) and copied where a link is impossible (another
    disk, no permission); a linked image is the same file as the source, so edit neither in place.
    The report is also written to dst/convert_report.json."""
    if dst_format not in FORMATS:
        raise DataError(f"unknown label format '{dst_format}': use one of {', '.join(FORMATS)}")
    _check_percent(val_split)
    dst = Path(dst_dir)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise DataError(f"output folder {dst} is not empty: pass a new or empty folder")
    dataset = read_dataset(src_format, images, labels, classes, class_mapping, names)
    train, val = split_dataset(dataset, val_split, split_mode, seed)
    splits = {}
    for name, part in (("train", train), ("val", val)):
        if not part.items:
            continue
        linked, copied = _place_images(part, dst / name / "images")
        if dst_format == "kitti":
            written = write_kitti(part, dst / name / "labels")
        elif dst_format == "yolo":
            written = write_yolo(part, dst / name / "labels", dst / "names.txt")
        else:
            written = write_coco(part, dst / f"{name}.json")
        splits[name] = {"images": len(part.items), "objects": sum(len(it.boxes) for it in part.items),
                        "images_linked": linked, "images_copied": copied, **written}
    if dst_format == "yolo":  # what Ultralytics-style trainers read
        data_yaml = {"path": str(dst.resolve()), "train": "train/images", "nc": len(dataset.classes),
                     "names": dataset.classes}
        if "val" in splits:
            data_yaml["val"] = "val/images"
        atomic_write_text(dst / "data.yaml", yaml.safe_dump(data_yaml, sort_keys=False))
    report = dataset_report(dataset)
    report["conversion"] = {"src_format": src_format, "dst_format": dst_format, "dst_dir": str(dst),
                            "val_split_percent": val_split, "split_mode": split_mode, "seed": seed,
                            "splits": splits}
    atomic_write_json(dst / "convert_report.json", report)
    return report


def _check_percent(val_percent: float) -> None:
    if not 0 <= val_percent < 100:
        raise DataError(f"val_split={val_percent} must be a percent of the images, 0 <= val_split < 100")
    if 0 < val_percent < 1:  # the classification task's val_split is a fraction: catch the mix-up
        raise DataError(f"val_split={val_percent} is read as a percent, i.e. {val_percent}% of the images; "
                        f"for {val_percent * 100:g}% write {val_percent * 100:g}")


def _natural_key(text: str) -> list:
    """'frame_9' sorts before 'frame_10'. Splitting on digit runs alternates text and digits, so the
    compared elements are always of the same type."""
    return [int(part) if i % 2 else part.lower() for i, part in enumerate(re.split(r"(\d+)", text))]


def _place_images(dataset: DetectionDataset, folder: Path) -> tuple[int, int]:
    """Hard-link (or, failing that, copy) every image into `folder`; returns (linked, copied)."""
    folder.mkdir(parents=True, exist_ok=True)
    linked = copied = 0
    for item in _unique_names(dataset, by_stem=False):
        target = folder / item.image.name
        try:
            os.link(item.image, target)
            linked += 1
        except OSError:  # EXDEV (another file system), EPERM, or no hard links on this file system
            shutil.copy2(item.image, target)
            copied += 1
    return linked, copied


# ----------------------------------------------------------------------------------------- reports

def dataset_report(dataset: DetectionDataset) -> dict:
    """Counts for a person to check a dataset at a glance (JSON-serialisable)."""
    boxes = np.concatenate([it.boxes for it in dataset.items]) if dataset.items else np.zeros((0, 4))
    labels = np.concatenate([it.labels for it in dataset.items]) if dataset.items else np.zeros(0, int)
    per_class = np.bincount(labels, minlength=len(dataset.classes))

    def histogram(sizes: np.ndarray) -> dict[str, int]:
        counts = np.bincount(np.searchsorted(BOX_SIZE_BINS, sizes, side="right"), minlength=len(BOX_SIZE_LABELS))
        return dict(zip(BOX_SIZE_LABELS, map(int, counts)))

    return {
        "classes": list(dataset.classes),
        "images": len(dataset.items),
        "objects": int(len(boxes)),
        "objects_per_class": {name: int(n) for name, n in zip(dataset.classes, per_class)},
        "images_without_objects": sum(1 for it in dataset.items if len(it.boxes) == 0),
        "ignore_regions": sum(len(it.ignore) for it in dataset.items),
        "predictions": any(it.scores is not None for it in dataset.items),
        "box_width_px": histogram(boxes[:, 2] - boxes[:, 0]),
        "box_height_px": histogram(boxes[:, 3] - boxes[:, 1]),
        "problems": dataset.problems.as_dict(),
    }


def format_report(report: dict) -> str:
    """A few terminal lines for a `dataset_report` (or `convert_dataset`) result."""
    def row(counts: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in counts.items())

    lines = [f"{report['images']} images ({report['images_without_objects']} without objects), "
             f"{report['objects']} objects, {report['ignore_regions']} ignore regions",
             f"objects per class: {row(report['objects_per_class']) or '-'}",
             f"box width px:  {row(report['box_width_px'])}",
             f"box height px: {row(report['box_height_px'])}"]
    problems = report["problems"]
    if problems["unmapped_classes"]:
        lines.append(f"dropped, class not in {report['classes']}: {row(problems['unmapped_classes'])}")
    for kind, count in sorted(problems["counts"].items()):
        lines.append(f"{kind}: {count}, e.g. {problems['examples'][kind][0]}")
    conversion = report.get("conversion")
    if conversion:
        for name, split in conversion["splits"].items():
            lines.append(f"wrote {name}: {split['images']} images, {split['objects']} objects as "
                         f"{conversion['dst_format']} in {conversion['dst_dir']} "
                         f"({split['images_linked']} images hard-linked, {split['images_copied']} copied)"
                         + (f"; {split['ignore_regions_dropped']} ignore regions dropped (YOLO has none)"
                            if split.get("ignore_regions_dropped") else "")
                         + ("; class names written as " + ", ".join(f"'{a}' -> '{b}'" for a, b in
                                                                    split["kitti_names"].items())
                            + " (KITTI rows are space-separated)" if split.get("kitti_names") else ""))
    return "\n".join(lines)
