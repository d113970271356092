"""Every geometric augmentation keeps each box on its object's pixels."""
import random

import numpy as np
import pytest
from PIL import Image

from transferkit.vision.box_augment import DetectionAugment, DetectionAugmentationConfig, random_affine, resize_with_boxes

NO_COLOUR = dict(brightness=0, contrast=0, saturation=0, hue=0)


def scene(width=80, height=60):
    """Black image with two white rectangles; boxes are their exact continuous extents."""
    arr = np.zeros((height, width, 3), np.uint8)
    boxes = np.array([[10, 8, 30, 28], [45, 20, 75, 50]], np.float32)
    for x1, y1, x2, y2 in boxes.astype(int):
        arr[y1:y2, x1:x2] = 255
    return Image.fromarray(arr), boxes, np.array([0, 1])


def ink_box(image: Image.Image, box) -> np.ndarray:
    """Tight continuous box of the bright pixels inside `box` grown by 3 px."""
    arr = np.asarray(image.convert("L")).astype(float)
    x1, y1, x2, y2 = box
    h, w = arr.shape
    xa, ya, xb, yb = int(max(0, x1 - 3)), int(max(0, y1 - 3)), int(min(w, x2 + 3)), int(min(h, y2 + 3))
    sub = arr[ya:yb, xa:xb] > 127
    ys, xs = np.nonzero(sub)
    return np.array([xs.min() + xa, ys.min() + ya, xs.max() + xa + 1, ys.max() + ya + 1], float)


def assert_boxes_on_ink(image, boxes, tol=1.5):
    for box in boxes:
        assert np.abs(ink_box(image, box) - box).max() <= tol, (ink_box(image, box), box)


def test_resize_scales_boxes_with_the_image():
    image, boxes, _ = scene()
    out, scaled = resize_with_boxes(image, boxes, 160, 96)
    assert out.size == (160, 96)
    assert_boxes_on_ink(out, scaled)


@pytest.mark.parametrize("flip_x,flip_y", [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0)])
def test_flips_mirror_the_boxes(flip_x, flip_y):
    image, boxes, labels = scene()
    cfg = DetectionAugmentationConfig(horizontal_flip=flip_x, vertical_flip=flip_y, zoom=(1, 1), translate=0, **NO_COLOUR)
    out, moved, kept = random_affine(image, boxes, labels, 80, 60, cfg, random.Random(0))
    assert list(kept) == [0, 1]
    if flip_x:
        assert moved[0, 0] == pytest.approx(80 - 30) and moved[0, 2] == pytest.approx(80 - 10)
    if flip_y:
        assert moved[0, 1] == pytest.approx(60 - 28) and moved[0, 3] == pytest.approx(60 - 8)
    assert_boxes_on_ink(out, moved)


@pytest.mark.parametrize("seed", range(6))
def test_zoom_and_translate_keep_boxes_on_their_objects(seed):
    image, boxes, labels = scene()
    cfg = DetectionAugmentationConfig(horizontal_flip=0.5, zoom=(0.6, 1.4), translate=0.15, **NO_COLOUR)
    out, moved, kept = random_affine(image, boxes, labels, 96, 64, cfg, random.Random(seed))
    assert out.size == (96, 64)
    assert np.all(moved[:, [0, 2]] >= 0) and np.all(moved[:, [0, 2]] <= 96)
    assert np.all(moved[:, [1, 3]] >= 0) and np.all(moved[:, [1, 3]] <= 64)
    # Boxes fully inside the output must sit on their rectangle's pixels; clipped ones on the visible part.
    assert_boxes_on_ink(out, moved, tol=2.0)


def test_boxes_pushed_out_of_the_image_are_dropped():
    image, boxes, labels = scene()
    cfg = DetectionAugmentationConfig(horizontal_flip=0, zoom=(3.0, 3.0), translate=0, **NO_COLOUR)
    _, moved, kept = random_affine(image, boxes, labels, 80, 60, cfg, random.Random(0))
    # Zoomed 3x around the centre only the middle of the image stays: both rectangles are at least clipped.
    assert len(moved) == len(kept) <= 2
    assert np.all((moved[:, 2] - moved[:, 0]) >= 2)


def test_colour_jitter_changes_pixels_not_boxes():
    image, boxes, labels = scene()
    aug = DetectionAugment(80, 60, DetectionAugmentationConfig(horizontal_flip=0, zoom=(1, 1), translate=0, brightness=0.5,
                                                    contrast=0.5, saturation=0.5, hue=0.1), seed=1)
    out, moved, _ = aug(image, boxes, labels)
    np.testing.assert_allclose(moved, boxes, atol=1e-4)
