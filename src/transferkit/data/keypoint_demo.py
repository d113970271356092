"""Offline keypoint demos: `figures` (drawn stick figures) and `faces` (real photos, five landmarks).

`figures`: drawn, articulated stick figures on scikit-image textures.

Each image holds 1-3 figures with 14 named joints (head, neck, shoulders, elbows, wrists, hips, knees, ankles),
random lean, arm and leg angles, sizes and colours. A figure faces the viewer: its left side is on the image's
right, and its left limbs are drawn lighter than its body and its right limbs darker, so left and right can be
told apart (and must swap under a horizontal flip). Visibility follows COCO: 2 visible, 1 labelled but hidden
(under a textured occluder or a figure drawn later), 0 out of frame (x = y = 0). `bbox` is the tight box of the
figure's drawn pixels inside the image and `area` that box's area. (COCO's `area` is a person's mask area,
about half its box; a stick figure's thin limbs cover only a fifth to a third of its box, which would make OKS,
whose scale is that area, far stricter than on people. Sets without masks use the box area, as this one does.)

Written as `train/`, `val/` PNG images plus `train.json`, `val.json` COCO keypoint files (file names relative to
the split's image folder). Deterministic per (seed, split, index), like every demo in data/demo.py.

`faces`: the 100 face photos in scikit-image's wheel (`skimage.data.lfw_subset`, 25x25 grey crops from Labeled
Faces in the Wild; LFW publishes no licence, its images come from news photos: fine for a demo, not for a
product), upscaled, each labelled with five landmarks by MTCNN's ONet (weights `onet.pt` from the facenet-pytorch
wheel, MIT). The labels are a network's output, not human annotation: good for NME / PCK on real pixels and a
landmark model's plumbing, not a benchmark. The box is the whole crop. The seed only chooses the train/val split.
"""
from __future__ import annotations

import functools
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import DataError
from .demo import _background, _rng, _write, register_demo

FIGURE_KEYPOINTS = ("head", "neck", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
                    "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
FIGURE_SKELETON = ((0, 1), (1, 2), (1, 3), (2, 4), (4, 6), (3, 5), (5, 7), (2, 8), (3, 9), (8, 9), (8, 10),
                   (10, 12), (9, 11), (11, 13))  # 0-based; written 1-based as COCO does
_LEFT_LIMBS = ((2, 4), (4, 6), (8, 10), (10, 12))
_RIGHT_LIMBS = ((3, 5), (5, 7), (9, 11), (11, 13))
_MIN_LABELLED = 4  # joints in frame a figure needs to be kept


def _png_bytes(pixels: np.ndarray) -> bytes:
    """PNG at zlib level 3: as small as the default level 6 for these textures, and about three times faster."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


@dataclass
class Figure:
    joints: np.ndarray  # (14, 2) float pixel-index coordinates (may lie outside the image)
    height: float  # figure height in px, sets limb widths


def _pose(rng: np.random.Generator, size: int, allow_outside: bool) -> Figure:
    """Random joint positions: lean, arm and leg angles, body proportions, placement."""
    height = rng.uniform(0.35, 0.8) * size
    lean = math.radians(rng.normal(0.0, 12.0))
    down = np.array([math.sin(lean), math.cos(lean)])  # along the spine, neck to hips
    side = np.array([down[1], -down[0]])  # towards the figure's left (the image's right when upright)
    j = np.zeros((14, 2))
    torso = height * rng.uniform(0.28, 0.34)
    j[1] = 0.0
    j[0] = -down * height * rng.uniform(0.1, 0.13) + side * rng.normal(0, 0.01 * height)
    shoulder, hip = height * rng.uniform(0.09, 0.13), height * rng.uniform(0.06, 0.09)
    j[2], j[3] = side * shoulder, -side * shoulder
    hips = down * torso
    j[8], j[9] = hips + side * hip, hips - side * hip

    def limb(start: np.ndarray, outward: np.ndarray, first_deg: float, bend_deg: float, lengths) -> tuple:
        # Angles are measured from "down" towards `outward`.
        a = math.radians(first_deg)
        d1 = down * math.cos(a) + outward * math.sin(a)
        b = a + math.radians(bend_deg)
        d2 = down * math.cos(b) + outward * math.sin(b)
        middle = start + d1 * lengths[0]
        return middle, middle + d2 * lengths[1]

    arm = (height * rng.uniform(0.14, 0.17), height * rng.uniform(0.13, 0.16))
    leg = (height * rng.uniform(0.2, 0.24), height * rng.uniform(0.2, 0.24))
    for (s, e, w), out in (((2, 4, 6), side), ((3, 5, 7), -side)):
        j[e], j[w] = limb(j[s], out, rng.uniform(-40, 170), rng.uniform(-140, 40), arm)
    for (h, k, a), out in (((8, 10, 12), side), ((9, 11, 13), -side)):
        j[k], j[a] = limb(j[h], out, rng.uniform(-25, 70), rng.uniform(-80, 10), leg)
    low, high = j.min(axis=0), j.max(axis=0)
    margin = -0.25 * (high - low) if allow_outside else np.full(2, 0.06 * height)
    lo = margin - low
    hi = size - 1 - margin - high
    offset = np.array([rng.uniform(min(lo[i], hi[i]), max(lo[i], hi[i])) for i in range(2)])
    return Figure(j + offset, height)


def _draw(figure: Figure, image: ImageDraw.ImageDraw, mask: ImageDraw.ImageDraw, colour: np.ndarray) -> None:
    """The figure in `colour` (left limbs lighter, right limbs darker), and in white on its mask."""
    j = [tuple(map(float, p)) for p in figure.joints]
    width = max(2, int(round(figure.height * 0.055)))
    body = tuple(int(c) for c in colour)
    left = tuple(int(c) for c in np.rint(colour * 0.45 + 255 * 0.55))
    right = tuple(int(c) for c in np.rint(colour * 0.45))
    for draw, fill in ((image, None), (mask, 255)):
        torso = [j[2], j[3], j[9], j[8]]
        draw.polygon(torso, fill=fill or body)
        draw.line([j[1], j[0]], fill=fill or body, width=width)
        for limbs, tone in ((_RIGHT_LIMBS, right), (_LEFT_LIMBS, left)):
            for a, b in limbs:
                draw.line([j[a], j[b]], fill=fill or tone, width=width)
                for p in (j[a], j[b]):  # round joints
                    r = width / 2.0
                    draw.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=fill or tone)
        r = figure.height * 0.07
        draw.ellipse([j[0][0] - r, j[0][1] - r, j[0][0] + r, j[0][1] + r], fill=fill or body)


def _contrasting(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    for _ in range(20):
        colour = rng.uniform(30, 225, size=3)
        if np.abs(colour - under).sum() > 150:
            break
    return colour


@dataclass
class FigureScene:
    image: np.ndarray  # HxWx3 uint8
    annotations: list[dict]  # COCO annotations without id / image_id


def figure_scene(seed: int, split: str, index: int, size: int = 160) -> FigureScene:
    """One `figures` image and its objects' keypoints (v 0/1/2), boxes and areas."""
    rng = _rng(seed, "figures", split, index)
    picture = Image.fromarray(_background(rng, size, size))
    draw = ImageDraw.Draw(picture)
    masks: list[np.ndarray] = []
    figures: list[Figure] = []
    for _ in range(int(rng.integers(1, 4))):
        figure = _pose(rng, size, allow_outside=rng.random() < 0.3)
        if _in_frame(figure.joints, size).sum() < _MIN_LABELLED:
            figure = _pose(rng, size, allow_outside=False)
        under = np.asarray(picture, np.float32).reshape(-1, 3).mean(axis=0)
        layer = Image.new("L", (size, size), 0)
        _draw(figure, draw, ImageDraw.Draw(layer), _contrasting(rng, under))
        masks.append(np.asarray(layer) > 0)
        figures.append(figure)
    hidden = np.zeros((size, size), bool)
    for _ in range(int(rng.integers(0, 3)) if rng.random() < 0.5 else 0):
        hidden |= _occluder(rng, picture, size, figures)
    annotations = []
    for f, (figure, mask) in enumerate(zip(figures, masks)):
        covered = hidden.copy()
        for later in masks[f + 1:]:
            covered |= later
        inside = _in_frame(figure.joints, size)
        kps = np.zeros((len(FIGURE_KEYPOINTS), 3))
        for k in np.flatnonzero(inside):
            x, y = figure.joints[k]
            kps[k] = (round(float(x), 2), round(float(y), 2),
                      1 if covered[int(round(y)), int(round(x))] else 2)
        ys, xs = np.nonzero(mask)
        if len(xs) == 0 or np.count_nonzero(kps[:, 2]) == 0:
            continue
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        annotations.append({"category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                            "iscrowd": 0, "num_keypoints": int(np.count_nonzero(kps[:, 2])),
                            "keypoints": [float(v) if i % 3 < 2 else int(v) for i, v in enumerate(kps.reshape(-1))]})
    return FigureScene(np.asarray(picture), annotations)


def _in_frame(joints: np.ndarray, size: int) -> np.ndarray:
    return (joints[:, 0] >= 0) & (joints[:, 0] <= size - 1) & (joints[:, 1] >= 0) & (joints[:, 1] <= size - 1)


def _occluder(rng: np.random.Generator, picture: Image.Image, size: int, figures: list[Figure]) -> np.ndarray:
    """Paste a textured rectangle or ellipse over part of a random figure; returns the pixels it covers."""
    figure = figures[int(rng.integers(len(figures)))]
    centre = figure.joints[int(rng.integers(len(FIGURE_KEYPOINTS)))] + rng.normal(0, 0.05 * figure.height, 2)
    w, h = rng.uniform(0.12, 0.3, 2) * figure.height
    box = [float(centre[0] - w / 2), float(centre[1] - h / 2), float(centre[0] + w / 2), float(centre[1] + h / 2)]
    layer = Image.new("L", (size, size), 0)
    shape = ImageDraw.Draw(layer)
    (shape.rectangle if rng.random() < 0.5 else shape.ellipse)(box, fill=255)
    texture = Image.fromarray(_background(rng, size, size))
    picture.paste(texture, (0, 0), layer)
    return np.asarray(layer) > 0


@register_demo("figures", "keypoints",
               "drawn stick figures with 14 named joints (left limbs lighter, right darker) on skimage textures, "
               "occluders (v=1) and figures leaving the frame (v=0); COCO keypoints JSON with skeleton, bbox, area",
               train=120, val=30, size=160)
def _build_figures(out: Path, *, seed: int, train: int, val: int, size: int) -> dict:
    if size < 48:
        raise DataError(f"demo option size={size} is too small for figures; use 48 or more")
    counts: dict[str, dict] = {}
    category = {"id": 1, "name": "figure", "supercategory": "figure", "keypoints": list(FIGURE_KEYPOINTS),
                "skeleton": [[a + 1, b + 1] for a, b in FIGURE_SKELETON]}
    for split, count in (("train", train), ("val", val)):
        images, annotations = [], []
        visibility = np.zeros(3, np.int64)
        for i in range(count):
            scene = figure_scene(seed, split, i, size)
            file = f"{i:06d}.png"
            _write(out / split / file, _png_bytes(scene.image))
            images.append({"id": i + 1, "file_name": file, "width": size, "height": size})
            for ann in scene.annotations:
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **ann})
                visibility += np.bincount(np.asarray(ann["keypoints"][2::3], np.int64), minlength=3)
        coco = {"info": {"description": "transferkit demo: figures", "split": split}, "images": images,
                "annotations": annotations, "categories": [category]}
        _write(out / f"{split}.json", json.dumps(coco, indent=1) + "\n")
        counts[split] = {"images": count, "objects": len(annotations),
                         "keypoints": {"visible": int(visibility[2]), "occluded": int(visibility[1]),
                                       "out_of_frame": int(visibility[0])}}
    paths = {split: {"images": split, "labels": f"{split}.json"} for split in counts}
    return {"keypoints": list(FIGURE_KEYPOINTS), "skeleton": [list(e) for e in FIGURE_SKELETON],
            "counts": counts, "paths": paths}


# =================================================================================================
# faces: real photographs, five landmarks from MTCNN
# =================================================================================================

FACE_KEYPOINTS = ("right_eye", "left_eye", "nose", "right_mouth", "left_mouth")  # the person's sides, as COCO
_ONET_FACE_PROB = 0.9  # faces ONet does not accept as faces are left out (none of the 100 in scikit-image 0.26)


def _onet_weights() -> tuple[dict, Path]:
    """MTCNN's output network (ONet) weights as the facenet-pytorch wheel ships them, read without importing
    facenet_pytorch (its __init__ needs `requests`)."""
    import importlib.util

    import torch

    spec = importlib.util.find_spec("facenet_pytorch")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "onet.pt" if spec else None
    if path is None or not path.is_file():
        raise DataError("the faces demo labels faces with MTCNN weights from the facenet-pytorch wheel; install it "
                        "with `pip install --no-deps facenet-pytorch==2.6.0` (make install does)")
    return torch.load(path, map_location="cpu", weights_only=True), path


def _onet_landmarks(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 5, 2) landmarks as fractions of the face crop (x, y) and (N,) face probabilities for (N, H, W) grey
    face crops in [0, 1]. The network: MTCNN's ONet (Zhang et al. 2016) as facenet-pytorch lays out its weights."""
    import torch
    import torch.nn.functional as F

    w, _ = _onet_weights()

    def block(x, n: int, pool: tuple[int, int] | None):
        x = F.prelu(F.conv2d(x, w[f"conv{n}.weight"], w[f"conv{n}.bias"]), w[f"prelu{n}.weight"])
        return F.max_pool2d(x, pool[0], pool[1], ceil_mode=True) if pool else x

    with torch.no_grad():
        x = torch.as_tensor(faces * 255.0, dtype=torch.float32)[:, None].repeat(1, 3, 1, 1)
        x = (F.interpolate(x, size=(48, 48), mode="bilinear", align_corners=False) - 127.5) / 128.0
        x = block(block(block(block(x, 1, (3, 2)), 2, (3, 2)), 3, (2, 2)), 4, None)
        x = x.permute(0, 3, 2, 1).reshape(len(faces), -1)  # the weights expect this flattening order
        x = F.prelu(F.linear(x, w["dense5.weight"], w["dense5.bias"]), w["prelu5.weight"])
        prob = F.softmax(F.linear(x, w["dense6_1.weight"], w["dense6_1.bias"]), dim=1)[:, 1]
        points = F.linear(x, w["dense6_3.weight"], w["dense6_3.bias"])
    return torch.stack([points[:, :5], points[:, 5:]], dim=2).numpy().astype(np.float64), prob.numpy()


@functools.lru_cache(maxsize=1)
def _labelled_faces() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-image's 100 face crops, their ONet landmarks and face probabilities (computed once per process)."""
    import skimage.data

    crops = np.asarray(skimage.data.lfw_subset()[:100], np.float64)  # the first 100 are faces, the rest are not
    points, prob = _onet_landmarks(crops)
    return crops, points, prob


@register_demo("faces", "keypoints",
               "the 100 real face photos scikit-image ships (LFW subset, 25x25 grey, upscaled) with five landmarks "
               "(eyes, nose, mouth corners) from MTCNN's ONet in the facenet-pytorch wheel; COCO keypoints JSON",
               train=80, val=20, size=96)
def _build_faces(out: Path, *, seed: int, train: int, val: int, size: int) -> dict:
    if size < 32:
        raise DataError(f"demo option size={size} is too small for faces; use 32 or more")
    if train + val > 100:
        raise DataError(f"demo options train={train} + val={val} ask for more than the 100 faces scikit-image "
                        "ships; lower them")
    crops, points, prob = _labelled_faces()
    usable = np.flatnonzero(prob >= _ONET_FACE_PROB)
    if train + val > len(usable):
        raise DataError(f"demo options train={train} + val={val} ask for more than the {len(usable)} faces "
                        "MTCNN accepts among scikit-image's photos; lower them")
    order = _rng(seed, "faces", "split").permutation(usable)
    category = {"id": 1, "name": "face", "supercategory": "face", "keypoints": list(FACE_KEYPOINTS),
                "skeleton": [[1, 2], [1, 3], [2, 3], [3, 4], [3, 5], [4, 5]]}
    counts: dict[str, dict] = {}
    for split, chosen in (("val", order[:val]), ("train", order[val:val + train])):
        images, annotations = [], []
        for i, face in enumerate(chosen):
            pixels = np.clip(np.rint(crops[face] * 255.0), 0, 255).astype(np.uint8)
            picture = Image.fromarray(pixels).resize((size, size), Image.BICUBIC).convert("RGB")
            file = f"{i:06d}.png"
            _write(out / split / file, _png_bytes(np.asarray(picture)))
            # ONet gives fractions of the crop measured from its first pixel; scale to this image's pixel indices.
            xy = np.clip(points[face] * size, 0.0, size - 1.0)
            kps = np.concatenate([xy.round(2), np.full((5, 1), 2.0)], axis=1)
            images.append({"id": i + 1, "file_name": file, "width": size, "height": size, "lfw_subset_index": int(face)})
            annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [0, 0, size, size],
                                "area": size * size, "iscrowd": 0, "num_keypoints": 5,
                                "keypoints": [float(v) if j % 3 < 2 else int(v) for j, v in enumerate(kps.reshape(-1))]})
        coco = {"info": {"description": "transferkit demo: faces (LFW subset from scikit-image, MTCNN landmarks)",
                         "split": split}, "images": images, "annotations": annotations, "categories": [category]}
        _write(out / f"{split}.json", json.dumps(coco, indent=1) + "\n")
        counts[split] = {"images": len(chosen), "objects": len(chosen)}
    _, weights = _onet_weights()
    sources = {"images": "skimage.data.lfw_subset() (Labeled Faces in the Wild subset, as scikit-image ships it)",
               "landmarks": f"MTCNN ONet, {weights.name} from facenet-pytorch (MIT licence)"}
    paths = {split: {"images": split, "labels": f"{split}.json"} for split in counts}
    return {"keypoints": list(FACE_KEYPOINTS), "counts": counts, "paths": paths, "sources": sources}
