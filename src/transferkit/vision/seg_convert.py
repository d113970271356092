"""Segmentation dataset conversion: COCO JSON -> palette PNG masks, and masks -> COCO JSON.

COCO -> masks writes, into `out_dir`: `masks/<image stem>.png` (training indices, palette PNGs in the
class colours), `images.txt` (the images that have a mask, relative to out_dir) and `classes.json`
(the class table of the written masks: class i is id i, with its colour; usable as `data.classes`).

masks -> COCO writes one annotation per connected region (8-connected) of each class, except the
class named "background" (COCO's uncovered pixels), plus one iscrowd=1 annotation of category 0
"ignore" holding an image's ignore_index pixels. Category ids are class index + 1, as in the
detection writer. `encoding="polygons"` traces each region's outline along pixel edges; a region
whose polygons would not rasterise back to exactly its pixels (one with holes: COCO polygons cannot
cut holes) is written as RLE instead, and counted. So masks -> COCO -> masks gives the same masks
with either encoding.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import DataError
from ..io import atomic_write_json, atomic_write_text
from .images import ImageError
from .masks import (BACKGROUND, ClassTable, MaskProblems, coco_class_table, coco_decode, load_coco, load_target,
                    pair_masks, read_coco_masks, save_mask_png, scan_targets)

PathLike = str | os.PathLike
IGNORE_CATEGORY_ID = 0


def coco_to_masks(images_dir: PathLike, json_path: PathLike, out_dir: PathLike, table: ClassTable | None = None,
                  ignore_index: int = 255) -> dict:
    """Rasterise a COCO file into palette mask PNGs (module docstring); returns a report with the classes,
    counts and problems. `table=None` uses background + the file's categories."""
    out_dir = Path(out_dir)
    data = load_coco(json_path)
    table = table or coco_class_table(data, ignore_index)
    problems = MaskProblems()
    items = read_coco_masks(images_dir, json_path, table, problems, data)
    scan = scan_targets(items, table)
    problems.merge(scan.problems)
    written: list[str] = []
    for item in items:
        if str(item.image) in scan.bad:
            continue
        save_mask_png(out_dir / "masks" / f"{item.image.stem}.png", load_target(item, table), table)
        written.append(os.path.relpath(item.image, out_dir))
    atomic_write_text(out_dir / "images.txt", "".join(f"{p}\n" for p in written))
    classes = [{"name": n, "ids": [k], "colour": list(c)} for k, (n, c) in enumerate(zip(table.names, table.colours))]
    atomic_write_json(out_dir / "classes.json", classes)
    return {"masks": len(written), "masks_dir": str(out_dir / "masks"), "images_list": str(out_dir / "images.txt"),
            "classes": table.names, "classes_file": str(out_dir / "classes.json"),
            "pixels_per_class": dict(zip(table.names, scan.pixel_counts.tolist())), "problems": problems.as_dict()}


def masks_to_coco(images_dir: PathLike, masks_dir: PathLike, json_path: PathLike, table: ClassTable,
                  encoding: Literal["polygons", "rle"] = "polygons", split: str = "train") -> dict:
    """Write the masks of `masks_dir` (read through `table`) as a COCO JSON (module docstring); returns a
    report with counts and problems."""
    if encoding not in ("polygons", "rle"):
        raise DataError(f"COCO encoding must be polygons or rle, not {encoding!r}")
    problems = MaskProblems()
    items = pair_masks(images_dir, masks_dir, problems, f"data.{split}_images", f"data.{split}_masks")
    scan = scan_targets(items, table)
    problems.merge(scan.problems)
    category_of = category_ids(table)
    categories = [{"id": cid, "name": table.names[k], "supercategory": "none"} for k, cid in category_of.items()]
    images, annotations, as_rle = [], [], 0
    for image_id, item in enumerate((it for it in items if str(it.image) not in scan.bad), 1):
        try:
            indices = load_target(item, table)
        except ImageError as e:  # changed on disk since the scan
            problems.add("unreadable_mask", str(e))
            continue
        height, width = indices.shape
        images.append({"id": image_id, "file_name": os.path.relpath(item.image, images_dir),
                       "width": width, "height": height})
        found, fallbacks = mask_annotations(indices, table, image_id, len(annotations) + 1, encoding)
        annotations += found
        as_rle += fallbacks
    if any(a["iscrowd"] for a in annotations):
        categories.insert(0, {"id": IGNORE_CATEGORY_ID, "name": "ignore", "supercategory": "ignore"})
    atomic_write_text(json_path, json.dumps({"images": images, "annotations": annotations,
                                             "categories": categories}) + "\n")
    return {"images": len(images), "annotations": len(annotations), "regions_as_rle": as_rle,
            "json": str(json_path), "classes": table.names, "problems": problems.as_dict()}


def category_ids(table: ClassTable) -> dict[int, int]:
    """Training index -> COCO category id (index + 1) of every class except "background"."""
    return {k: k + 1 for k, name in enumerate(table.names) if name.lower() != BACKGROUND}


def mask_annotations(indices: np.ndarray, table: ClassTable, image_id: int, first_id: int = 1,
                     encoding: Literal["polygons", "rle"] = "polygons") -> tuple[list[dict], int]:
    """COCO annotations of one mask of training indices (module docstring: a region per class, one
    iscrowd annotation for the ignored pixels), numbered from `first_id`; also how many regions were
    written as RLE although polygons were asked for. Inference's predicted polygons use it too."""
    annotations, fallbacks = [], 0
    for k, category_id in category_ids(table).items():
        for region, fallback in _regions(indices == k, encoding):
            fallbacks += fallback
            annotations.append(_annotation(first_id + len(annotations), image_id, category_id, region, 0))
    ignored = indices == table.ignore_index
    if ignored.any():
        annotations.append(_annotation(first_id + len(annotations), image_id, IGNORE_CATEGORY_ID,
                                       {"rle": _rle(ignored)}, 1))
    return annotations, fallbacks


def _annotation(ann_id: int, image_id: int, category_id: int, region: dict, crowd: int) -> dict:
    from pycocotools import mask as coco_mask

    rle = region["rle"]
    x, y, w, h = (float(v) for v in coco_mask.toBbox(rle))
    segmentation = region.get("polygons") or {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "segmentation": segmentation,
            "area": float(coco_mask.area(rle)), "bbox": [x, y, w, h], "iscrowd": crowd}


def _rle(binary: np.ndarray) -> dict:
    from pycocotools import mask as coco_mask

    return coco_mask.encode(np.asfortranarray(binary.astype(np.uint8)))


def _regions(binary: np.ndarray, encoding: str) -> list[tuple[dict, int]]:
    """(region, 1 if polygons were asked for but RLE is written) per 8-connected region of `binary`."""
    from pycocotools import mask as coco_mask
    from skimage.measure import label

    if not binary.any():
        return []
    labels, count = label(binary, connectivity=2, return_num=True)
    height, width = binary.shape
    found = []
    for k in range(1, count + 1):
        region = labels == k
        rle = _rle(region)
        if encoding == "rle":
            found.append(({"rle": rle}, 0))
            continue
        polygons = outline_polygons(region)
        exact = bool(polygons) and np.array_equal(
            coco_decode(coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))).astype(bool), region)
        found.append(({"rle": rle, "polygons": polygons}, 0) if exact else ({"rle": rle}, 1))
    return found


# Directed pixel edges, clockwise around each pixel on screen (y down): top, right, bottom, left.
_STEPS = ((1, 0), (0, 1), (-1, 0), (0, -1))


def outline_polygons(region: np.ndarray) -> list[list[float]]:
    """The outlines of a binary region as COCO polygons [x1, y1, x2, y2, ...] along pixel edges (pixel
    (r, c) is the square c..c+1, r..r+1). Outer outlines run clockwise on screen, holes the other way;
    holes are returned too (the caller sees that polygons cannot express them)."""
    padded = np.pad(region.astype(bool), 1)
    inside = padded[1:-1, 1:-1]
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}
    sides = (
        (inside & ~padded[:-2, 1:-1], (0, 0), 0),   # top edge, pixel above is outside: (c, r) -> (c+1, r)
        (inside & ~padded[1:-1, 2:], (1, 0), 1),    # right: (c+1, r) -> (c+1, r+1)
        (inside & ~padded[2:, 1:-1], (1, 1), 2),    # bottom: (c+1, r+1) -> (c, r+1)
        (inside & ~padded[1:-1, :-2], (0, 1), 3),   # left: (c, r+1) -> (c, r)
    )
    for mask, (dx, dy), step in sides:
        rows, cols = np.nonzero(mask)
        for r, c in zip(rows.tolist(), cols.tolist()):
            edges.setdefault((c + dx, r + dy), []).append(_STEPS[step])
    loops = []
    while edges:
        start = next(iter(edges))
        point, heading, loop = start, None, []
        while True:
            options = edges.get(point)
            if not options:
                break
            step = _turn_right_first(options, heading)
            options.remove(step)
            if not options:
                del edges[point]
            if step != heading:
                loop.append(point)
            heading = step
            point = (point[0] + step[0], point[1] + step[1])
            if point == start and start not in edges:
                break
        if len(loop) >= 3:
            loops.append([float(v) for xy in loop for v in xy])
    return loops


def _turn_right_first(options: list[tuple[int, int]], heading: tuple[int, int] | None) -> tuple[int, int]:
    """At a vertex where two outlines touch, keep hugging the same pixel: right turn, straight, left turn."""
    if heading is None or len(options) == 1:
        return options[0]
    dx, dy = heading
    for candidate in ((-dy, dx), (dx, dy), (dy, -dx)):  # right (on screen, y down), straight, left
        if candidate in options:
            return candidate
    return options[0]
