"""A tiny COCO keypoints set for the task tests: stick figures of five named points on noise, 1-2 per image."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from transferkit.cli import main

NAMES = ["head", "left_hand", "right_hand", "left_foot", "right_foot"]
SKELETON = [[1, 2], [1, 3], [1, 4], [1, 5]]  # 1-based, as COCO writes it
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]


def tkit(*args) -> int:
    return main([str(a) for a in args])


def write_split(root: Path, split: str, images: int, seed: int, size: tuple[int, int] = (96, 80)) -> tuple[Path, Path]:
    """root/<split>/ images and root/<split>.json; returns (images folder, labels file)."""
    rng = np.random.default_rng(seed)
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": [
        {"id": 1, "name": "figure", "keypoints": NAMES, "skeleton": SKELETON}]}
    width, height = size
    for i in range(1, images + 1):
        pixels = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
        picture = Image.fromarray(pixels)
        draw = ImageDraw.Draw(picture)
        for n in range(1 + i % 2):
            w, h = rng.uniform(22, 34), rng.uniform(28, 40)
            x0 = rng.uniform(1, width - w - 1) if n == 0 else rng.uniform(1, width - w - 1)
            y0 = rng.uniform(1, height - h - 1)
            cx = x0 + w / 2
            points = np.array([[cx, y0 + 3], [x0 + 2, y0 + h * 0.45], [x0 + w - 2, y0 + h * 0.45],
                               [x0 + w * 0.3, y0 + h - 2], [x0 + w * 0.7, y0 + h - 2]])
            points += rng.uniform(-2, 2, points.shape)
            for a, b in SKELETON:
                draw.line((*points[a - 1], *points[b - 1]), fill=(200, 200, 200), width=2)
            for (x, y), colour in zip(points, COLOURS):
                draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
            kps = np.concatenate([points, np.full((5, 1), 2.0)], axis=1)
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i, "category_id": 1,
                                        "bbox": [float(x0), float(y0), float(w), float(h)], "area": float(w * h),
                                        "iscrowd": 0, "num_keypoints": 5,
                                        "keypoints": [round(float(v), 2) for v in kps.flatten()]})
        name = f"{i:04d}.png"
        picture.save(folder / name)
        coco["images"].append({"id": i, "file_name": name, "width": width, "height": height})
    labels = root / f"{split}.json"
    labels.write_text(json.dumps(coco))
    return folder, labels


def make_set(root: Path, train: int = 8, val: int = 4) -> Path:
    write_split(root, "train", train, seed=1)
    write_split(root, "val", val, seed=2)
    return root


def data_args(root: Path) -> list[str]:
    return [f"data.train_images={root / 'train'}", f"data.train_labels={root / 'train.json'}",
            f"data.val_images={root / 'val'}", f"data.val_labels={root / 'val.json'}"]


FAST = ["data.image_width=64", "data.image_height=64", "train.batch_size=4", "train.num_workers=0", "train.epochs=2",
        "train.histograms=false", "model.pretrained=false", "evaluation.batch_size=8", "model.deconv_channels=[32,32,32]",
        "data.heatmap_sigma=1.5"]
