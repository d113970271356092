"""Augmentation for detection that keeps boxes exact: flips, zoom/translate, colour.

Every geometric step maps the image and the boxes with the same affine transform (a scale and a
shift per axis, plus optional flips), so a box drawn on the output image lands on the same pixels
as the object. Boxes are continuous x1, y1, x2, y2 pixels (see data/boxes.py).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image
from torchvision.transforms import v2 as T


@dataclass(frozen=True)
class BoxAugmentConfig:
    horizontal_flip: float = 0.5  # probability
    vertical_flip: float = 0.0
    zoom: tuple[float, float] = (0.8, 1.25)  # output scale factor range (>1 zooms in)
    translate: float = 0.1  # max shift, as a fraction of the output size
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    min_box_size: float = 2.0  # boxes cropped smaller than this (pixels) are dropped


def resize_with_boxes(image: Image.Image, boxes: np.ndarray, width: int, height: int) -> tuple[Image.Image, np.ndarray]:
    """Stretch the image to width x height and scale the boxes with it (the evaluation transform)."""
    sx, sy = width / image.width, height / image.height
    scaled = boxes.astype(np.float32) * np.array([sx, sy, sx, sy], dtype=np.float32)
    return image.resize((width, height), Image.BILINEAR), scaled


def random_affine(image: Image.Image, boxes: np.ndarray, labels: np.ndarray, width: int, height: int,
                  cfg: BoxAugmentConfig, rng: random.Random) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """Resize to the output size with random zoom, shift and flips; clip boxes, drop the lost ones."""
    sx, sy = width / image.width, height / image.height
    zoom = rng.uniform(*cfg.zoom)
    sx, sy = sx * zoom, sy * zoom
    # Centre the zoomed image, then shift it by up to `translate` of the output size.
    tx = (width - image.width * sx) / 2 + rng.uniform(-cfg.translate, cfg.translate) * width
    ty = (height - image.height * sy) / 2 + rng.uniform(-cfg.translate, cfg.translate) * height
    flip_x = rng.random() < cfg.horizontal_flip
    flip_y = rng.random() < cfg.vertical_flip
    if flip_x:  # x' = width - (sx * x + tx)
        sx, tx = -sx, width - tx
    if flip_y:
        sy, ty = -sy, height - ty
    # PIL wants the inverse map (output pixel -> input pixel): x = (x' - tx) / sx.
    out = image.transform((width, height), Image.AFFINE, (1 / sx, 0, -tx / sx, 0, 1 / sy, -ty / sy),
                          resample=Image.BILINEAR, fillcolor=(114, 114, 114))
    mapped = boxes.astype(np.float64) * np.array([sx, sy, sx, sy]) + np.array([tx, ty, tx, ty])
    x1 = np.minimum(mapped[:, 0], mapped[:, 2]).clip(0, width)
    x2 = np.maximum(mapped[:, 0], mapped[:, 2]).clip(0, width)
    y1 = np.minimum(mapped[:, 1], mapped[:, 3]).clip(0, height)
    y2 = np.maximum(mapped[:, 1], mapped[:, 3]).clip(0, height)
    result = np.stack([x1, y1, x2, y2], axis=1).astype(np.float32).reshape(-1, 4)
    keep = ((result[:, 2] - result[:, 0]) >= cfg.min_box_size) & ((result[:, 3] - result[:, 1]) >= cfg.min_box_size)
    return out, result[keep], labels[keep]


class DetectionAugment:
    """Training transform: random affine (zoom, shift, flips) to the network size, then colour jitter."""

    def __init__(self, width: int, height: int, cfg: BoxAugmentConfig, seed: int | None = None):
        self.width, self.height, self.cfg = width, height, cfg
        self.rng = random.Random(seed)
        self.colour = T.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)

    def __call__(self, image: Image.Image, boxes: np.ndarray, labels: np.ndarray):
        image, boxes, labels = random_affine(image, boxes, labels, self.width, self.height, self.cfg, self.rng)
        if any((self.cfg.brightness, self.cfg.contrast, self.cfg.saturation, self.cfg.hue)):
            image = self.colour(image)
        return image, boxes, labels
