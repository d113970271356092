"""Top-down crop geometry (numpy): boxes to crop windows, affine matrices, warping, flips, random crop parameters.

Every point is in pixel-index coordinates (pixel i's centre is at i). A crop of `output_size` (w, h) shows the
window of `scale` (w, h) image pixels around `center`, rotated by `rotation_deg` (counter-clockwise as the
picture is displayed); `crop_matrix` maps image points to crop points and `warp_image` samples pixels with the
very same mapping, so keypoints moved by `transform_points` land on what the crop shows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


def box_to_center_scale(bbox_xywh, aspect: float, padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """Centre (2,) and window size (2,) w, h in px: the box grown to `aspect` (w / h), then by `padding`."""
    x, y, w, h = (float(v) for v in bbox_xywh)
    center = np.array([x + w / 2.0, y + h / 2.0], np.float64)
    return center, _fit_aspect(w, h, aspect) * padding


def _fit_aspect(w: float, h: float, aspect: float) -> np.ndarray:
    """Grow the shorter side so that w / h == aspect (never shrink: the whole box stays in the window)."""
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    return np.array([w, h], np.float64)


def crop_matrix(center, scale, rotation_deg: float, output_size) -> np.ndarray:
    """2x3 affine taking image px to crop px: `center` to the crop's middle, `scale` px to the crop's size."""
    out_w, out_h = float(output_size[0]), float(output_size[1])
    sx, sy = out_w / float(scale[0]), out_h / float(scale[1])
    theta = math.radians(float(rotation_deg))
    cos, sin = math.cos(theta), math.sin(theta)
    # out = S @ R @ (p - center) + middle; R with +sin above turns content counter-clockwise on screen (y down).
    linear = np.array([[sx * cos, sx * sin], [-sy * sin, sy * cos]], np.float64)
    middle = np.array([(out_w - 1.0) / 2.0, (out_h - 1.0) / 2.0])
    offset = middle - linear @ np.asarray(center, np.float64)
    return np.concatenate([linear, offset[:, None]], axis=1)


def invert_matrix(matrix: np.ndarray) -> np.ndarray:
    """The 2x3 affine that undoes `matrix` (crop px back to image px)."""
    full = np.vstack([np.asarray(matrix, np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def transform_points(xy: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to (K, 2) points."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    matrix = np.asarray(matrix, np.float64)
    return xy @ matrix[:, :2].T + matrix[:, 2]


def warp_image(image: np.ndarray, matrix: np.ndarray, output_size, fill: int | tuple = 0) -> np.ndarray:
    """Sample the crop (bilinear) that `matrix` describes from an HxW or HxWxC uint8 image."""
    inverse = invert_matrix(matrix)
    linear, shift = inverse[:, :2], inverse[:, 2]
    # PIL samples at pixel edges + 0.5 on both sides; convert the index-coordinate mapping to that convention.
    shift = shift + 0.5 - linear @ np.array([0.5, 0.5])
    data = (linear[0, 0], linear[0, 1], shift[0], linear[1, 0], linear[1, 1], shift[1])
    picture = Image.fromarray(np.ascontiguousarray(image))
    if isinstance(fill, (int, float)) and picture.mode == "RGB":
        fill = (int(fill),) * 3
    size = (int(output_size[0]), int(output_size[1]))
    warped = picture.transform(size, Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR, fillcolor=fill)
    return np.asarray(warped)


def flip_keypoints(kps: np.ndarray, width: int, pairs) -> np.ndarray:
    """(K, 3) keypoints of the horizontally flipped image: x -> width - 1 - x where labelled, left/right swapped."""
    out = np.array(kps, dtype=np.float32, copy=True)
    labelled = out[:, 2] > 0
    out[labelled, 0] = (width - 1) - out[labelled, 0]
    for i, j in pairs:
        out[[i, j]] = out[[j, i]]
    return out


@dataclass
class KeypointAugment:
    """Random crop parameters for one training object (the caller warps the image and moves the keypoints)."""

    scale_range: tuple[float, float] = (0.75, 1.25)
    rotation_deg: float = 30.0
    flip_prob: float = 0.5
    half_body_prob: float = 0.0
    pairs: tuple[tuple[int, int], ...] | list = ()
    upper_body_ids: tuple[int, ...] | list = ()
    aspect: float = 0.75  # crop w / h
    padding: float = 1.25
    half_body_min_points: int = 3  # labelled keypoints an object needs before half-body may pick one half

    def __call__(self, rng: np.random.Generator, image: np.ndarray, bbox, kps: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, float, bool]:
        """(center, scale, rotation_deg, flipped); when flipped, `center` is already in the flipped image's
        coordinates: flip the image (x -> width - 1 - x) and `flip_keypoints` before `crop_matrix`."""
        center, scale = box_to_center_scale(bbox, self.aspect, self.padding)
        kps = np.asarray(kps, np.float64)
        if self.half_body_prob > 0 and rng.random() < self.half_body_prob:
            center, scale = self._half_body(rng, kps, center, scale)
        low, high = self.scale_range
        scale = scale * rng.uniform(low, high)
        rotation = float(rng.uniform(-self.rotation_deg, self.rotation_deg)) if self.rotation_deg > 0 else 0.0
        flipped = bool(self.flip_prob > 0 and rng.random() < self.flip_prob)
        if flipped:
            width = np.asarray(image).shape[1]
            center = np.array([width - 1 - center[0], center[1]])
        return center, scale, rotation, flipped

    def _half_body(self, rng: np.random.Generator, kps: np.ndarray, center: np.ndarray, scale: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
        """The window around the labelled upper- or lower-body keypoints (unchanged when too few)."""
        labelled = kps[:, 2] > 0
        if labelled.sum() < self.half_body_min_points:
            return center, scale
        upper_mask = np.zeros(len(kps), bool)
        upper_mask[list(self.upper_body_ids)] = True
        upper, lower = np.flatnonzero(labelled & upper_mask), np.flatnonzero(labelled & ~upper_mask)
        chosen = upper if rng.random() < 0.5 else lower
        if len(chosen) < 2:
            chosen = lower if chosen is upper else upper
        if len(chosen) < 2:
            return center, scale
        points = kps[chosen, :2]
        low, high = points.min(axis=0), points.max(axis=0)
        size = _fit_aspect(max(high[0] - low[0], 1.0), max(high[1] - low[1], 1.0), self.aspect) * 1.5
        return (low + high) / 2.0, size
