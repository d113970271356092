"""COCO keypoint labels: reading them (every bad row skipped and named), flip pairs, OKS sigmas, results files.

Coordinates are pixel indices (the centre of the top-left pixel is 0, 0), the convention every drawing and
flip in this task uses: a horizontal flip maps x to width - 1 - x. COCO files written by annotation tools in the
pixel-edge convention (0 .. width) are accepted too: a labelled keypoint counts as inside its image when
-0.5 <= x <= width and -0.5 <= y <= height.

Bad rows are skipped and named in `KeypointSet.skipped` as "<file>: annotation <id>: <reason> (<fix>)":
wrong keypoint count, a non-number / NaN / inf, visibility not 0/1/2, a labelled keypoint outside its image,
a missing or degenerate bbox, an unknown image or category id, a repeated annotation id, a bad area or iscrowd.
Images are skipped the same way ("<file>: images[i] (id N): ..."): a repeated id, a missing size, a file
not on disk (when `images_dir` is given). A mistake that spoils the whole file raises DataError.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...data.names import class_name_problem
from ...errors import DataError, SpecError, first_line
from ...io import atomic_write_json
from ...vision.formats import load_coco_json

# COCO's per-joint OKS sigmas for its 17 person keypoints (cocodataset.org keypoint evaluation).
COCO_PERSON_SIGMAS = {
    "nose": 0.026, "left_eye": 0.025, "right_eye": 0.025, "left_ear": 0.035, "right_ear": 0.035,
    "left_shoulder": 0.079, "right_shoulder": 0.079, "left_elbow": 0.072, "right_elbow": 0.072,
    "left_wrist": 0.062, "right_wrist": 0.062, "left_hip": 0.107, "right_hip": 0.107,
    "left_knee": 0.087, "right_knee": 0.087, "left_ankle": 0.089, "right_ankle": 0.089,
}
_EDGE = 0.5  # how far past pixel index 0 / width - 1 a keypoint may lie (see the module docstring)


@dataclass(frozen=True)
class KpImage:
    id: int
    file: str  # file_name as the JSON gives it, relative to the images folder
    width: int
    height: int


@dataclass(frozen=True)
class KpObject:
    ann_id: int
    image_id: int
    bbox: tuple[float, float, float, float]  # x, y, w, h in pixels, clipped to the image
    keypoints: np.ndarray  # (K, 3) float32 x, y, v; x = y = 0 where v == 0
    area: float  # COCO's area (the OKS scale); the bbox area when the file gives none
    iscrowd: bool

    @property
    def num_keypoints(self) -> int:
        """Labelled keypoints (v > 0), as COCO's `num_keypoints`."""
        return int(np.count_nonzero(self.keypoints[:, 2] > 0))


@dataclass
class KeypointSet:
    names: list[str]
    skeleton: list[tuple[int, int]]  # 0-based keypoint index pairs
    category_id: int
    category_name: str
    images: list[KpImage]
    objects: list[KpObject]
    skipped: list[str] = field(default_factory=list)  # "train.json: annotation 17: reason (fix)"

    def to_coco(self) -> dict:
        """This set as a COCO keypoints dict (1-based skeleton, num_keypoints filled in), e.g. for oks_evaluate."""
        return {
            "images": [{"id": i.id, "file_name": i.file, "width": i.width, "height": i.height} for i in self.images],
            "annotations": [{
                "id": o.ann_id, "image_id": o.image_id, "category_id": self.category_id, "bbox": list(o.bbox),
                "area": o.area, "iscrowd": int(o.iscrowd), "num_keypoints": o.num_keypoints,
                "keypoints": [round(float(v), 3) for v in o.keypoints.reshape(-1)],
            } for o in self.objects],
            "categories": [{"id": self.category_id, "name": self.category_name, "keypoints": list(self.names),
                            "skeleton": [[a + 1, b + 1] for a, b in self.skeleton]}],
        }


def read_coco_keypoints(labels: Path, images_dir: Path | None = None, *,
                        category: str | None = None) -> KeypointSet:
    """Read one category's keypoint annotations; bad rows go to `skipped`, whole-file mistakes raise DataError."""
    labels = Path(labels)
    data = _load(labels)
    cat = _pick_category(data["categories"], labels, category)
    names = _keypoint_names(cat, labels)
    skeleton = _skeleton(cat, len(names), labels)
    skipped: list[str] = []
    images = _images(data["images"], labels, None if images_dir is None else Path(images_dir), skipped)
    by_id = {image.id: image for image in images}
    known_categories = {c.get("id") for c in data["categories"] if isinstance(c, dict)}
    left_out = _left_out(images, data["images"])
    objects: list[KpObject] = []
    seen: set[int] = set()
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            skipped.append(f"{labels.name}: annotations[{i}]: is not an object (write {{\"id\": ..., \"keypoints\": ...}})")
            continue
        ann_id = ann.get("id")
        where = f"{labels.name}: annotation {ann_id}" if _is_int(ann_id) else f"{labels.name}: annotations[{i}]"
        if not _is_int(ann_id):
            skipped.append(f"{where}: id {ann_id!r} is not a whole number (give every annotation a unique integer id)")
            continue
        if ann_id in seen:
            skipped.append(f"{where}: the id is used twice; the first is kept (give every annotation a unique id)")
            continue
        seen.add(ann_id)
        if ann.get("category_id") != cat["id"]:
            if ann.get("category_id") not in known_categories:
                skipped.append(f"{where}: category_id {ann.get('category_id')!r} is not in categories "
                               "(add the category or fix the id)")
            continue  # another category's object: not part of this keypoint set
        obj, problem = _object(ann, int(ann_id), by_id, len(names), skipped_images=left_out)
        if problem:
            skipped.append(f"{where}: {problem}")
        else:
            objects.append(obj)
    return KeypointSet(names, skeleton, int(cat["id"]), str(cat["name"]), images, objects, skipped)


def _load(path: Path) -> dict:
    return load_coco_json(path, "keypoints", "person_keypoints_*.json",
                          "a results list is read with evaluation.predictions")


def _pick_category(categories: list, path: Path, wanted: str | None) -> dict:
    usable = [c for c in categories if isinstance(c, dict) and isinstance(c.get("keypoints"), list) and c["keypoints"]]
    if not usable:
        raise DataError(f"{path}: no category has a 'keypoints' list of names; a COCO keypoints file declares "
                        "them in categories[].keypoints")
    for c in usable:
        if not _is_int(c.get("id")) or not isinstance(c.get("name"), str) or not c["name"].strip():
            raise DataError(f"{path}: category {c.get('name')!r} needs an integer 'id' and a non-empty 'name'")
        problem = class_name_problem(c["name"])
        if problem:
            raise DataError(f"{path}: category name {c['name']!r} {problem}; fix the name in the file")
    if wanted is None:
        if len(usable) > 1:
            raise DataError(f"{path}: {len(usable)} categories have keypoints "
                            f"({', '.join(repr(c['name']) for c in usable)}); choose one with data.category")
        return usable[0]
    found = [c for c in usable if c["name"] == wanted] or [c for c in usable if c["name"].lower() == wanted.lower()]
    if not found:
        raise DataError(f"{path}: no category named {wanted!r} has keypoints; the file has "
                        f"{', '.join(repr(c['name']) for c in usable)}")
    return found[0]


def _keypoint_names(cat: dict, path: Path) -> list[str]:
    names = cat["keypoints"]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{path}: category {cat['name']!r} keypoints[{i}] is {name!r}; each keypoint name "
                            "must be a non-empty string")
        problem = class_name_problem(name)
        if problem:
            raise DataError(f"{path}: keypoint name {name!r} (keypoints[{i}]) {problem}; fix the name in the file")
        if name.lower() in seen:
            raise DataError(f"{path}: keypoint name {name!r} appears twice (keypoints[{seen[name.lower()]}] and "
                            f"[{i}], ignoring case); each keypoint needs its own name")
        seen[name.lower()] = i
    return [str(n) for n in names]


def _skeleton(cat: dict, num: int, path: Path) -> list[tuple[int, int]]:
    raw = cat.get("skeleton") or []
    if not isinstance(raw, list):
        raise DataError(f"{path}: category {cat['name']!r} skeleton must be a list of [a, b] pairs (1-based)")
    edges = []
    for i, pair in enumerate(raw):
        if not (isinstance(pair, list) and len(pair) == 2 and all(_is_int(v) and 1 <= v <= num for v in pair)):
            raise DataError(f"{path}: skeleton[{i}] is {pair!r}; each edge is [a, b] with 1-based keypoint "
                            f"numbers 1..{num}")
        edges.append((int(pair[0]) - 1, int(pair[1]) - 1))
    return edges


def _images(entries: list, path: Path, images_dir: Path | None, skipped: list[str]) -> list[KpImage]:
    from ...vision.images import ImageError, image_size

    images: list[KpImage] = []
    seen: set[int] = set()
    for i, entry in enumerate(entries):
        image_id = entry.get("id") if isinstance(entry, dict) else None
        where = f"{path.name}: images[{i}] (id {image_id})"
        if not isinstance(entry, dict) or not _is_int(image_id):
            skipped.append(f"{where}: needs an integer 'id' (fix the entry)")
            continue
        if image_id in seen:
            skipped.append(f"{where}: the image id is used twice; the first is kept (give each image its own id)")
            continue
        seen.add(image_id)
        file = entry.get("file_name")
        if not isinstance(file, str) or not file.strip():
            skipped.append(f"{where}: file_name is {file!r} (give the image's path relative to the images folder)")
            continue
        width, height = entry.get("width"), entry.get("height")
        if images_dir is not None:
            on_disk = images_dir / file
            if not on_disk.is_file():
                skipped.append(f"{where}: {on_disk} is not on disk; its annotations are left out (add the file "
                               "or remove the entry)")
                continue
            try:
                width, height = image_size(on_disk)  # the header wins over the JSON
            except ImageError as e:
                skipped.append(f"{where}: {first_line(e)}; its annotations are left out")
                continue
        if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
            skipped.append(f"{where}: width/height are {width!r}/{height!r}; give positive integers "
                           "(or pass the images folder so they are read from the files)")
            continue
        images.append(KpImage(int(image_id), file, int(width), int(height)))
    return images


def _left_out(kept: list[KpImage], entries: list) -> set:
    """Ids of images listed in the file but skipped: their annotations are not reported a second time."""
    kept_ids = {image.id for image in kept}
    return {e.get("id") for e in entries if isinstance(e, dict) and e.get("id") not in kept_ids}


def _object(ann: dict, ann_id: int, images: dict[int, KpImage], num: int,
            skipped_images: set) -> tuple[KpObject | None, str | None]:
    image = images.get(ann.get("image_id"))
    if image is None:
        if ann.get("image_id") in skipped_images:
            return None, "its image was skipped (see that image's entry)"
        return None, f"image_id {ann.get('image_id')!r} is not in images (fix the id or add the image)"
    crowd = ann.get("iscrowd", 0)
    if crowd not in (0, 1, False, True):
        return None, f"iscrowd is {crowd!r} (use 0 or 1)"
    kps = ann.get("keypoints")
    if not isinstance(kps, list):
        return None, f"keypoints is {type(kps).__name__}, not a list (write [x, y, v] for each of the {num} keypoints)"
    if len(kps) != 3 * num:
        return None, (f"keypoints has {len(kps)} numbers, expected 3 x {num} = {3 * num} "
                      "(x, y, v for each keypoint the category names)")
    if not all(_is_number(v) for v in kps):
        bad = next(v for v in kps if not _is_number(v))
        return None, f"keypoints holds {bad!r}, not a finite number (fix or remove the row)"
    arr = np.asarray(kps, np.float64).reshape(num, 3)
    bad_v = ~np.isin(arr[:, 2], (0, 1, 2))
    if bad_v.any():
        k = int(np.flatnonzero(bad_v)[0])
        return None, f"keypoint {k} has visibility {arr[k, 2]:g}; use 0 (not labelled), 1 (occluded) or 2 (visible)"
    labelled = arr[:, 2] > 0
    outside = labelled & ((arr[:, 0] < -_EDGE) | (arr[:, 0] > image.width) |
                          (arr[:, 1] < -_EDGE) | (arr[:, 1] > image.height))
    if outside.any():
        k = int(np.flatnonzero(outside)[0])
        return None, (f"keypoint {k} at ({arr[k, 0]:g}, {arr[k, 1]:g}) lies outside its {image.width}x{image.height} "
                      "image (set v=0 for keypoints out of frame)")
    arr[~labelled, :2] = 0.0
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        return None, f"bbox is {bbox!r}; give 4 numbers [x, y, w, h] in pixels"
    x, y, w, h = map(float, bbox)
    x0, y0 = max(x, 0.0), max(y, 0.0)
    x1, y1 = min(x + w, float(image.width)), min(y + h, float(image.height))
    if w <= 0 or h <= 0 or x1 <= x0 or y1 <= y0:
        return None, f"bbox {bbox!r} has no area inside the {image.width}x{image.height} image (fix the box)"
    area = ann.get("area", (x1 - x0) * (y1 - y0))
    if not _is_number(area) or area < 0:
        return None, f"area is {area!r}; give a non-negative number (the object's area in pixels)"
    return KpObject(ann_id, image.id, (x0, y0, x1 - x0, y1 - y0), arr.astype(np.float32), float(area),
                    bool(crowd)), None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) or (
        isinstance(value, float) and value.is_integer())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ------------------------------------------------------------------------------------------ flip pairs

_SIDES = {"left": "right", "right": "left", "l": "r", "r": "l"}
_SEPARATORS = re.compile(r"([_\-\s.]+)")


def _mirror_name(name: str) -> str | None:
    """`name` with its one side word swapped (left_eye -> right_eye, eye_l -> eye_r); None without one."""
    parts = _SEPARATORS.split(name.lower())
    sides = [i for i, part in enumerate(parts) if part in _SIDES]
    if len(sides) != 1:
        return None
    parts[sides[0]] = _SIDES[parts[sides[0]]]
    return "".join(parts)


def flip_pairs(names: list[str], given: list[list[str]] | None = None) -> list[tuple[int, int]]:
    """Index pairs (i < j) that swap under a horizontal flip: from `given` name pairs, else from left/right names."""
    lower = {n.lower(): i for i, n in enumerate(names)}
    pairs: list[tuple[int, int]] = []
    if given is not None:
        used: dict[int, list[str]] = {}
        for pair in given:
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                raise SpecError(f"model.flip_pairs entry {pair!r} must be two keypoint names, e.g. "
                                "[left_hand, right_hand]")
            if str(pair[0]).lower() == str(pair[1]).lower():
                raise SpecError(f"model.flip_pairs pairs {pair[0]!r} with itself; leave it out instead")
            index = []
            for name in pair:
                i = lower.get(str(name).lower())
                if i is None:
                    raise SpecError(f"model.flip_pairs names {name!r}, which is not a keypoint; the keypoints are "
                                    f"{', '.join(names)}")
                if i in used:
                    raise SpecError(f"model.flip_pairs puts keypoint {names[i]!r} in two pairs ({used[i]} and "
                                    f"{list(pair)}); each keypoint swaps with at most one other")
                used[i] = list(pair)
                index.append(i)
            pairs.append((min(index), max(index)))
        return sorted(pairs)
    for i, name in enumerate(names):
        j = lower.get(_mirror_name(name) or "")
        if j is not None and i < j:
            pairs.append((i, j))
    return pairs


_UPPER_BODY_WORDS = frozenset({"head", "neck", "nose", "eye", "ear", "mouth", "chin", "face", "shoulder", "elbow",
                               "wrist", "hand", "thumb", "finger", "chest", "throat"})


def upper_body_ids(names: list[str]) -> list[int]:
    """Keypoints whose name has an upper-body word (head, eye, shoulder, elbow, wrist, hand ...): half-body's top."""
    return [i for i, name in enumerate(names)
            if any(part.rstrip("s") in _UPPER_BODY_WORDS for part in _SEPARATORS.split(name.lower()))]


def coco_sigmas(names: list[str]) -> np.ndarray | None:
    """COCO's OKS sigmas in `names` order when `names` are COCO's 17 person keypoints (any order, any case)."""
    lower = [n.lower() for n in names]
    if sorted(lower) != sorted(COCO_PERSON_SIGMAS):
        return None
    return np.array([COCO_PERSON_SIGMAS[n] for n in lower], np.float64)


def write_coco_results(path: str | os.PathLike, results: list[dict]) -> Path:
    """Write a COCO keypoint results list atomically after checking each entry's keys."""
    needed = ("image_id", "category_id", "keypoints", "score")
    for i, r in enumerate(results):
        missing = [k for k in needed if k not in r]
        if missing:
            raise ValueError(f"keypoint result {i} lacks {', '.join(missing)}")
        if len(r["keypoints"]) % 3:
            raise ValueError(f"keypoint result {i} has {len(r['keypoints'])} keypoint numbers, not a multiple of 3")
    clean = [{**r, "image_id": int(r["image_id"]), "category_id": int(r["category_id"]),
              "keypoints": [float(v) for v in r["keypoints"]], "score": float(r["score"])} for r in results]
    return atomic_write_json(path, clean)
