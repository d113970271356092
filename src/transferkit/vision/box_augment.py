"""Augmentation for detection that keeps boxes exact: flips, zoom/translate, jitter, mosaic, colour.

Every geometric step maps the image and the boxes with the same affine transform (a scale and a
shift per axis, plus optional flips; `apply_affine` is the one place that does it), so a box drawn
on the output image lands on the same pixels as the object. Boxes are continuous x1, y1, x2, y2
pixels (see data/boxes.py); DontCare regions travel with them under label -1.

Two training recipes share those pieces:

- `DetectionAugment` (DetectNet_v2, `DetectionAugmentationConfig`): random zoom/shift/flips, then
  colour jitter.
- `YoloAugment` (YOLOv4, `YoloAugmentationConfig`): darknet-style jitter (random crop/pad per side, so
  random scale and aspect) or, with probability `mosaic_prob`, a 4-image mosaic; then HSV jitter.

Both configs are the spec's `data.augmentation` sections themselves (pydantic models, defined here
next to the code that reads them): their Field bounds are the ranges these functions handle.

All randomness comes from the `random.Random` a transform holds, never from torch's or numpy's
global generators, so one seed gives one stream (the dataset reseeds it per DataLoader worker).
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable
import numpy as np
from PIL import Image
from pydantic import Field, PositiveFloat
from torchvision.transforms.v2 import functional as F

from ..spec import MinMax, SpecModel
from .images import ImageError

FILL = (114, 114, 114)  # where no source pixel lands (padding, mosaic gaps)


MIN_BOX_SIZE = 2.0  # boxes cut narrower or shorter than this (pixels) are dropped by every augmentation


class DetectionAugmentationConfig(SpecModel):
    """DetectNet_v2's `data.augmentation` section, read by `DetectionAugment`."""

    horizontal_flip: float = Field(0.5, ge=0, le=1, description="probability of a left-right flip")
    vertical_flip: float = Field(0.0, ge=0, le=1, description="probability of an up-down flip")
    zoom: MinMax[PositiveFloat] = Field(
        (0.8, 1.25), description="random zoom range [min, max] (>1 zooms in)")
    translate: float = Field(0.1, ge=0, le=0.5, description="max random shift, fraction of the image size")
    brightness: float = Field(0.2, ge=0, description="brightness jitter")
    contrast: float = Field(0.2, ge=0, description="contrast jitter")
    saturation: float = Field(0.2, ge=0, description="saturation jitter")
    hue: float = Field(0.02, ge=0, le=0.5, description="hue jitter, fraction of the hue circle")


class YoloAugmentationConfig(SpecModel):
    """YOLOv4 / darknet training augmentation (TAO's `augmentation_config` keys), read by `YoloAugment`."""

    horizontal_flip: float = Field(0.5, ge=0, le=1, description="probability of a left-right flip")
    vertical_flip: float = Field(0.0, ge=0, le=1, description="probability of an up-down flip")
    # Below 0.5 the cropped window keeps a positive size whatever is cut from its two sides.
    jitter: float = Field(0.3, ge=0, lt=0.5, description="random crop/pad up to this fraction of each side (< 0.5)")
    hue: float = Field(0.1, ge=0, le=0.5, description="hue shift, fraction of the hue circle")
    saturation: float = Field(1.5, ge=1, description="saturation scale in [1/s, s] (1 = off)")
    exposure: float = Field(1.5, ge=1, description="brightness scale in [1/e, e] (1 = off)")
    mosaic_prob: float = Field(0.5, ge=0, le=1, description="probability of a 4-image mosaic")
    mosaic_min_ratio: float = Field(0.2, ge=0, le=0.5, description="mosaic centre lies in [r, 1-r] of the image")
    min_visible: float = Field(0.3, ge=0, le=1, description="drop boxes with less of their area left after cropping")


# -- geometry ---------------------------------------------------------------------------------------------

def resize_with_boxes(image: Image.Image, boxes: np.ndarray, width: int, height: int) -> tuple[Image.Image, np.ndarray]:
    """Stretch the image to width x height and scale the boxes with it (the evaluation transform)."""
    sx, sy = width / image.width, height / image.height
    scaled = boxes.astype(np.float32) * np.array([sx, sy, sx, sy], dtype=np.float32)
    return image.resize((width, height), Image.BILINEAR), scaled


def apply_affine(image: Image.Image, boxes: np.ndarray, labels: np.ndarray, width: int, height: int,
                 sx: float, sy: float, tx: float, ty: float, flip_x: bool, flip_y: bool,
                 min_box_size: float, min_visible: float = 0.0) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """Map image and boxes by x' = sx * x + tx, y' = sy * y + ty onto a width x height canvas, then flip.

    The one affine mapper every geometric augmentation uses: uncovered pixels get FILL, boxes are
    clipped to the canvas and those left narrower or shorter than `min_box_size`, or with less than
    `min_visible` of their area on the canvas, are dropped (with their labels): a digit cut to a
    sliver is no longer that digit."""
    if flip_x:  # x' = width - (sx * x + tx)
        sx, tx = -sx, width - tx
    if flip_y:
        sy, ty = -sy, height - ty
    # PIL wants the inverse map (output pixel -> input pixel): x = (x' - tx) / sx.
    out = image.transform((width, height), Image.AFFINE, (1 / sx, 0, -tx / sx, 0, 1 / sy, -ty / sy),
                          resample=Image.BILINEAR, fillcolor=FILL)
    mapped = boxes.astype(np.float64).reshape(-1, 4) * np.array([sx, sy, sx, sy]) + np.array([tx, ty, tx, ty])
    x1 = np.minimum(mapped[:, 0], mapped[:, 2]).clip(0, width)
    x2 = np.maximum(mapped[:, 0], mapped[:, 2]).clip(0, width)
    y1 = np.minimum(mapped[:, 1], mapped[:, 3]).clip(0, height)
    y2 = np.maximum(mapped[:, 1], mapped[:, 3]).clip(0, height)
    result = np.stack([x1, y1, x2, y2], axis=1).astype(np.float32).reshape(-1, 4)
    keep = ((result[:, 2] - result[:, 0]) >= min_box_size) & ((result[:, 3] - result[:, 1]) >= min_box_size)
    if min_visible > 0:
        full = np.abs((mapped[:, 2] - mapped[:, 0]) * (mapped[:, 3] - mapped[:, 1]))
        kept_area = (result[:, 2] - result[:, 0]) * (result[:, 3] - result[:, 1])
        keep &= kept_area >= min_visible * full
    return out, result[keep], np.asarray(labels)[keep]


def random_affine(image: Image.Image, boxes: np.ndarray, labels: np.ndarray, width: int, height: int,
                  cfg: DetectionAugmentationConfig, rng: random.Random) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """Resize to the output size with random zoom, shift and flips; clip boxes, drop the lost ones."""
    sx, sy = width / image.width, height / image.height
    zoom = rng.uniform(*cfg.zoom)
    sx, sy = sx * zoom, sy * zoom
    # Centre the zoomed image, then shift it by up to `translate` of the output size.
    tx = (width - image.width * sx) / 2 + rng.uniform(-cfg.translate, cfg.translate) * width
    ty = (height - image.height * sy) / 2 + rng.uniform(-cfg.translate, cfg.translate) * height
    flip_x = rng.random() < cfg.horizontal_flip
    flip_y = rng.random() < cfg.vertical_flip
    return apply_affine(image, boxes, labels, width, height, sx, sy, tx, ty, flip_x, flip_y, MIN_BOX_SIZE)


def jitter_resize(image: Image.Image, boxes: np.ndarray, labels: np.ndarray, width: int, height: int,
                  jitter: float, horizontal_flip: float, vertical_flip: float, rng: random.Random, *,
                  min_box_size: float = MIN_BOX_SIZE, cover: bool = False,
                  min_visible: float = 0.0) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """Darknet jitter: crop (or pad, with FILL) each side of the image by a random amount up to
    `jitter` x its width/height, resize that window to width x height, flip with the given
    probabilities. One affine for image and boxes; boxes clipped, tiny ones dropped.

    `cover=False` stretches the window onto the output (random aspect and scale, like darknet).
    `cover=True` scales it uniformly until it covers the output and crops the overhang at a random
    offset (how mosaic fills a tile of any shape without squashing its image)."""
    w, h = image.width, image.height
    dw, dh = jitter * w, jitter * h
    left, right = rng.uniform(-dw, dw), rng.uniform(-dw, dw)
    top, bottom = rng.uniform(-dh, dh), rng.uniform(-dh, dh)
    crop_w, crop_h = w - left - right, h - top - bottom  # > 0 because jitter < 0.5
    if cover:
        scale = max(width / crop_w, height / crop_h)
        sx = sy = scale
        tx = -left * scale - rng.uniform(0, crop_w * scale - width)
        ty = -top * scale - rng.uniform(0, crop_h * scale - height)
    else:
        sx, sy = width / crop_w, height / crop_h
        tx, ty = -left * sx, -top * sy
    flip_x = rng.random() < horizontal_flip
    flip_y = rng.random() < vertical_flip
    return apply_affine(image, boxes, labels, width, height, sx, sy, tx, ty, flip_x, flip_y, min_box_size, min_visible)


Sample = tuple[Image.Image, np.ndarray, np.ndarray]  # (RGB image, boxes [N, 4], labels [N])


def mosaic(samples: list[Sample], width: int, height: int, min_ratio: float, cfg: YoloAugmentationConfig,
           rng: random.Random) -> Sample:
    """YOLOv4 mosaic of 4 samples on a width x height canvas.

    A centre (cx, cy) is drawn uniformly in [min_ratio, 1 - min_ratio] x (width, height) and rounded
    to whole pixels; samples 0..3 fill the top-left, top-right, bottom-left and bottom-right tiles
    it makes. Each sample is `jitter_resize`d (cover=True, with the config's jitter and flips) to
    its tile's size and pasted there, so each box is clipped to its own tile, dropped when smaller
    than `MIN_BOX_SIZE`, and shifted into canvas pixels. Pixels no image covers are FILL."""
    if len(samples) != 4:
        raise ValueError(f"mosaic needs 4 samples, got {len(samples)}")
    cx = int(round(rng.uniform(min_ratio, 1 - min_ratio) * width))
    cy = int(round(rng.uniform(min_ratio, 1 - min_ratio) * height))
    tiles = [(0, 0, cx, cy), (cx, 0, width, cy), (0, cy, cx, height), (cx, cy, width, height)]
    canvas = Image.new("RGB", (width, height), FILL)
    all_boxes, all_labels = [np.zeros((0, 4), np.float32)], [np.zeros(0, np.int64)]
    for (image, boxes, labels), (x0, y0, x1, y1) in zip(samples, tiles):
        if x1 <= x0 or y1 <= y0:
            continue  # an empty tile shows nothing, so it keeps no boxes
        tile, moved, kept = jitter_resize(image, boxes, labels, x1 - x0, y1 - y0, cfg.jitter, cfg.horizontal_flip,
                                          cfg.vertical_flip, rng, cover=True,
                                          min_visible=cfg.min_visible)
        canvas.paste(tile, (x0, y0))
        all_boxes.append(moved + np.array([x0, y0, x0, y0], np.float32))
        all_labels.append(np.asarray(kept, np.int64))
    return canvas, np.concatenate(all_boxes).astype(np.float32), np.concatenate(all_labels)


# -- colour -----------------------------------------------------------------------------------------------

def _rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """float RGB in [0, 1] (..., 3) -> HSV in [0, 1] (hue as a fraction of the circle)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    maxc, minc = rgb.max(-1), rgb.min(-1)
    delta = maxc - minc
    safe = np.where(delta > 0, delta, 1)
    s = np.where(maxc > 0, delta / np.where(maxc > 0, maxc, 1), 0)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = np.where(r == maxc, bc - gc, np.where(g == maxc, 2 + rc - bc, 4 + gc - rc))
    h = np.where(delta > 0, (h / 6) % 1.0, 0)
    return np.stack([h, s, maxc], axis=-1)


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    h6 = (h % 1.0) * 6
    i = np.floor(h6)
    f = h6 - i
    i = i.astype(np.int64) % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1)


def adjust_hsv(image: Image.Image, hue_shift: float, saturation_scale: float, value_scale: float) -> Image.Image:
    """Rotate hue by `hue_shift` of the circle, scale saturation and value (clipped to 1)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    hsv = _rgb_to_hsv(rgb)
    hsv[..., 0] = (hsv[..., 0] + hue_shift) % 1.0
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation_scale, 0, 1)
    hsv[..., 2] = np.clip(hsv[..., 2] * value_scale, 0, 1)
    out = np.clip(np.rint(_hsv_to_rgb(hsv) * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(out, "RGB")


def _log_uniform_scale(limit: float, rng: random.Random) -> float:
    """A scale in [1/limit, limit], uniform in log space (limit >= 1)."""
    span = math.log(limit)
    return math.exp(rng.uniform(-span, span))


def hsv_jitter(image: Image.Image, hue: float, saturation: float, exposure: float,
               rng: random.Random) -> Image.Image:
    """Darknet colour jitter: hue shift uniform in [-hue, hue] of the circle, saturation and value
    scales log-uniform in [1/saturation, saturation] and [1/exposure, exposure]. Pixels only; the
    geometry (and so every box) is unchanged. hue=0, saturation=1, exposure=1 returns the image as is."""
    shift = rng.uniform(-hue, hue)
    s = _log_uniform_scale(saturation, rng)
    v = _log_uniform_scale(exposure, rng)
    return adjust_hsv(image, shift, s, v)


def colour_jitter(image: Image.Image, cfg: DetectionAugmentationConfig, rng: random.Random) -> Image.Image:
    """torchvision's ColorJitter (same factor ranges, random order), drawing from `rng`."""
    ops = []
    if cfg.brightness:
        ops.append((F.adjust_brightness, rng.uniform(max(0.0, 1 - cfg.brightness), 1 + cfg.brightness)))
    if cfg.contrast:
        ops.append((F.adjust_contrast, rng.uniform(max(0.0, 1 - cfg.contrast), 1 + cfg.contrast)))
    if cfg.saturation:
        ops.append((F.adjust_saturation, rng.uniform(max(0.0, 1 - cfg.saturation), 1 + cfg.saturation)))
    if cfg.hue:
        ops.append((F.adjust_hue, rng.uniform(-cfg.hue, cfg.hue)))
    rng.shuffle(ops)
    for op, factor in ops:
        image = op(image, factor)
    return image


# -- training transforms ----------------------------------------------------------------------------------

class DetectionAugment:
    """Training transform: random affine (zoom, shift, flips) to the network size, then colour jitter."""

    def __init__(self, width: int, height: int, cfg: DetectionAugmentationConfig, seed: int | None = None):
        self.width, self.height, self.cfg = width, height, cfg
        self.rng = random.Random(seed)

    def __call__(self, image: Image.Image, boxes: np.ndarray, labels: np.ndarray):
        image, boxes, labels = random_affine(image, boxes, labels, self.width, self.height, self.cfg, self.rng)
        return colour_jitter(image, self.cfg, self.rng), boxes, labels


class YoloAugment:
    """YOLOv4 training transform for one dataset item, with access to the rest of the dataset.

    `aug(load, index, count)` -> (image, boxes, labels) at width x height, where `load(i)` returns
    item i as (RGB PIL image, boxes [N, 4], labels [N]) or raises `ImageError` for a bad file and
    `count` is the number of items. With probability `cfg.mosaic_prob` the item becomes a `mosaic`
    (itself top-left, then 3 other items drawn at random; a one-item dataset repeats itself);
    otherwise it is `jitter_resize`d alone. Then `hsv_jitter`.

    Bad files: the item's own `ImageError` propagates (the dataset reports that file as skipped,
    as for every other transform). A bad extra image is replaced by another random item, up to
    `tries` draws per tile; if all fail the item falls back to no mosaic. Extras are never
    reported: each bad file is reported exactly once, when its own index is loaded.
    """

    def __init__(self, width: int, height: int, cfg: YoloAugmentationConfig, seed: int | None = None, tries: int = 3):
        self.width, self.height, self.cfg, self.tries = width, height, cfg, tries
        self.rng = random.Random(seed)

    def __call__(self, load: Callable[[int], Sample], index: int, count: int) -> Sample:
        cfg, rng = self.cfg, self.rng
        sample = load(index)  # ImageError here is the caller's skipped entry
        image = None
        if rng.random() < cfg.mosaic_prob:
            extras = self._extras(load, index, count, sample)
            if extras is not None:
                image, boxes, labels = mosaic([sample, *extras], self.width, self.height, cfg.mosaic_min_ratio,
                                              cfg, rng)
        if image is None:
            image, boxes, labels = jitter_resize(*sample, self.width, self.height, cfg.jitter, cfg.horizontal_flip,
                                                 cfg.vertical_flip, rng, min_visible=cfg.min_visible)
        return hsv_jitter(image, cfg.hue, cfg.saturation, cfg.exposure, rng), boxes, labels

    def _extras(self, load: Callable[[int], Sample], index: int, count: int, own: Sample) -> list[Sample] | None:
        """3 random other items (the item itself when it is the only one); None if too many are bad."""
        extras = []
        for _ in range(3):
            for _ in range(self.tries):
                if count <= 1:
                    extras.append(own)
                    break
                j = self.rng.randrange(count - 1)
                j += j >= index  # any index but our own
                try:
                    extras.append(load(j))
                    break
                except ImageError:
                    continue
            else:
                return None
        return extras
