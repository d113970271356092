"""YOLOv4 augmentation keeps every box on its object's pixels: jitter, flips, mosaic, HSV, the whole
transform, and the dataset plumbing (bad files, DataLoader workers, DetectionData's extension point).

Synthetic scenes: a plain gray background with each object painted as a solid rectangle of its own
colour (one colour per label, DontCare white). After a transform, every returned box must be filled
with its object's colour (bar a resampling border) and that colour must not show anywhere outside
the returned boxes, except as slivers too thin to have kept a box.
"""
from __future__ import annotations

import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from transferkit.vision.box_augment import (FILL, YoloAugment, YoloAugmentationConfig, adjust_hsv, hsv_jitter,
                                          jitter_resize, mosaic)
from transferkit.vision.boxes import ImageBoxes
from transferkit.tasks.detection.data import DetectionData
from transferkit.vision.datasets import DetectionImages, collate_detection
from transferkit.vision.images import ImageError

PALETTE = {0: (255, 0, 0), 1: (0, 255, 0), 2: (0, 0, 255), 3: (255, 255, 0), 4: (255, 0, 255), 5: (0, 255, 255),
           6: (255, 128, 0), 7: (128, 0, 255), 8: (0, 255, 128), 9: (255, 0, 128), 10: (128, 255, 0),
           11: (0, 128, 255), -1: (255, 255, 255)}
NO_COLOUR = dict(hue=0.0, saturation=1.0, exposure=1.0)
EVERY_PIECE = dict(min_visible=0.0)  # keep every box piece big enough, so check_boxes can demand a box per piece
TOL = 12  # a pixel within this of a colour (every channel) shows that object
BORDER = 1.5  # pixels at a box edge that resampling may blend with the background


def scene(seed: int, labels, width: int = 96, height: int = 72, background: int = 100, ignore: bool = False):
    """Gray image with one solid rectangle per label (some touching the border), 6 px apart."""
    rng = np.random.default_rng(seed)
    arr = np.full((height, width, 3), background, np.uint8)
    all_labels = list(labels) + ([-1] if ignore else [])
    boxes: list[tuple[int, int, int, int]] = []
    for label in all_labels:
        for _ in range(500):
            w, h = (int(v) for v in rng.integers(8, 24, size=2))
            x1, y1 = int(rng.integers(-4, width - w + 5)), int(rng.integers(-4, height - h + 5))
            box = (max(0, x1), max(0, y1), min(width, x1 + w), min(height, y1 + h))
            if all(box[2] + 6 <= b[0] or b[2] + 6 <= box[0] or box[3] + 6 <= b[1] or b[3] + 6 <= box[1]
                   for b in boxes):
                break
        else:
            raise AssertionError("could not place the objects")
        boxes.append(box)
        arr[box[1]:box[3], box[0]:box[2]] = PALETTE[label]
    return Image.fromarray(arr), np.array(boxes, np.float32).reshape(-1, 4), np.array(all_labels, np.int64)


def colour_mask(image: Image.Image, label: int) -> np.ndarray:
    arr = np.asarray(image).astype(np.int16)
    return np.abs(arr - np.array(PALETTE[label])).max(-1) <= TOL


def check_boxes(image: Image.Image, boxes: np.ndarray, labels: np.ndarray, expected, min_size: float = 2.0) -> None:
    """Each box sits on its object's colour; no visible piece of an object lacks a box unless it is too
    thin to keep one (then it fits no (min_size + 1)-pixel square: 3x3 for the default 2 px)."""
    w, h = image.size
    assert boxes.shape == (len(labels), 4) and boxes.dtype == np.float32
    assert set(labels.tolist()) <= set(expected), labels
    assert np.all(boxes[:, [0, 2]] >= 0) and np.all(boxes[:, [0, 2]] <= w), boxes
    assert np.all(boxes[:, [1, 3]] >= 0) and np.all(boxes[:, [1, 3]] <= h), boxes
    assert np.all(boxes[:, 2] - boxes[:, 0] >= min_size) and np.all(boxes[:, 3] - boxes[:, 1] >= min_size), boxes
    for label in expected:
        mask = colour_mask(image, label)
        covered = np.zeros_like(mask)
        for x1, y1, x2, y2 in boxes[labels == label]:
            xa, ya = math.ceil(x1 + BORDER), math.ceil(y1 + BORDER)
            xb, yb = math.floor(x2 - BORDER), math.floor(y2 - BORDER)
            if xb > xa and yb > ya:
                inside = mask[ya:yb, xa:xb].mean()
                assert inside >= 0.97, f"label {label}: box {(x1, y1, x2, y2)} is only {inside:.0%} its object"
            covered[max(0, math.floor(y1 - BORDER)):math.ceil(y2 + BORDER),
                    max(0, math.floor(x1 - BORDER)):math.ceil(x2 + BORDER)] = True
        stray = mask & ~covered
        side = math.ceil(min_size) + 1
        blobs = sliding_window_view(stray, (side, side)).all(axis=(-1, -2))
        ys, xs = np.nonzero(blobs)
        assert not len(ys), f"label {label}: object pixels near (x={xs[:3]}, y={ys[:3]}) have no box"


# -- jitter_resize ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cover", [False, True])
@pytest.mark.parametrize("seed", range(8))
def test_jitter_resize_keeps_every_box_on_its_object(seed, cover):
    image, boxes, labels = scene(seed, [0, 1, 2, 3], ignore=True)
    out, moved, kept = jitter_resize(image, boxes, labels, 80, 64, 0.3, 0.5, 0.5, random.Random(seed), cover=cover)
    assert out.size == (80, 64)
    check_boxes(out, moved, kept, [0, 1, 2, 3, -1])


@pytest.mark.parametrize("flip_x,flip_y", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_zero_jitter_is_a_resize_and_flips_mirror_the_boxes(flip_x, flip_y):
    image, boxes, labels = scene(3, [0, 1, 2])
    out, moved, kept = jitter_resize(image, boxes, labels, 48, 36, 0.0, flip_x, flip_y, random.Random(0))
    want = boxes / 2
    if flip_x:
        want[:, [0, 2]] = 48 - want[:, [2, 0]]
    if flip_y:
        want[:, [1, 3]] = 36 - want[:, [3, 1]]
    np.testing.assert_allclose(moved, want, atol=1e-4)
    assert kept.tolist() == labels.tolist()
    check_boxes(out, moved, kept, [0, 1, 2])


def test_jitter_draws_random_aspect_and_scale_within_the_jitter_range():
    """Darknet jitter: each side cropped or padded by up to jitter x the size, so the window is
    (1 +- 2 jitter) x the image and the scales per axis differ (random aspect)."""
    image = Image.new("RGB", (100, 50), (100, 100, 100))
    box = np.array([[40, 20, 60, 30]], np.float32)
    ratios, padded = [], 0
    for seed in range(60):
        out, moved, _ = jitter_resize(image, box, np.array([0]), 100, 50, 0.25, 0, 0, random.Random(seed))
        sx, sy = (moved[0, 2] - moved[0, 0]) / 20, (moved[0, 3] - moved[0, 1]) / 10
        assert 1 / 1.5 - 1e-4 <= sx <= 1 / 0.5 + 1e-4 and 1 / 1.5 - 1e-4 <= sy <= 1 / 0.5 + 1e-4
        ratios.append(sx / sy)
        padded += (np.abs(np.asarray(out).astype(int) - FILL).max(-1) == 0).any()
    assert min(ratios) < 0.85 and max(ratios) > 1.15
    assert 5 < padded < 60  # sometimes padding (fill shows), sometimes a pure crop


@pytest.mark.parametrize("size", [(40, 80), (120, 30), (96, 72)])
def test_cover_fills_any_tile_shape_without_squashing(size):
    """cover=True scales uniformly until the window covers the output: no padding without jitter."""
    image, boxes, labels = scene(4, [0, 1, 2])
    for seed in range(5):
        out, moved, kept = jitter_resize(image, boxes, labels, *size, 0.0, 0, 0, random.Random(seed), cover=True)
        assert not (np.abs(np.asarray(out).astype(int) - FILL).max(-1) == 0).any()
        check_boxes(out, moved, kept, [0, 1, 2])
        whole = (moved[:, 0] > 0) & (moved[:, 2] < size[0]) & (moved[:, 1] > 0) & (moved[:, 3] < size[1])
        src = boxes[np.isin(labels, kept[whole])]
        scale_x = (moved[whole, 2] - moved[whole, 0]) / (src[:, 2] - src[:, 0])
        scale_y = (moved[whole, 3] - moved[whole, 1]) / (src[:, 3] - src[:, 1])
        np.testing.assert_allclose(scale_x, scale_y, rtol=1e-4)
        np.testing.assert_allclose(scale_x, max(size[0] / 96, size[1] / 72), rtol=1e-4)


def test_boxes_cut_below_min_box_size_are_dropped():
    image, boxes, labels = scene(5, [0, 1, 2])
    dropped = 0
    for seed in range(30):
        out, moved, kept = jitter_resize(image, boxes, labels, 48, 36, 0.45, 0.5, 0, random.Random(seed),
                                         min_box_size=6.0)
        check_boxes(out, moved, kept, [0, 1, 2], min_size=6.0)
        dropped += len(labels) - len(kept)
    assert dropped > 0


# -- mosaic -------------------------------------------------------------------------------------------------

MOSAIC_SCENES = [dict(labels=[0, 1, 2], width=96, height=72, background=100, ignore=True),
                 dict(labels=[3, 4, 5], width=72, height=96, background=60),
                 dict(labels=[6, 7, 8], width=120, height=60, background=160),
                 dict(labels=[9, 10, 11], width=80, height=80, background=200)]


def mosaic_samples(seed: int):
    return [scene(seed * 4 + k, **kw) for k, kw in enumerate(MOSAIC_SCENES)]


@pytest.mark.parametrize("seed", range(8))
def test_mosaic_boxes_stay_on_their_objects_inside_their_own_tile(seed):
    cfg = YoloAugmentationConfig(jitter=0.3, horizontal_flip=0.5, vertical_flip=0.5, **NO_COLOUR, **EVERY_PIECE)
    out, boxes, labels = mosaic(mosaic_samples(seed), 96, 80, 0.2, cfg, random.Random(seed))
    assert out.size == (96, 80)
    check_boxes(out, boxes, labels, list(range(12)) + [-1])
    # The centre is the first draw: uniform in [0.2, 0.8] of the size, rounded to whole pixels.
    r = random.Random(seed)
    cx, cy = round(r.uniform(0.2, 0.8) * 96), round(r.uniform(0.2, 0.8) * 80)
    tiles = [(0, 0, cx, cy), (cx, 0, 96, cy), (0, cy, cx, 80), (cx, cy, 96, 80)]
    for k, (x0, y0, x1, y1) in enumerate(tiles):
        sample_labels = MOSAIC_SCENES[k]["labels"] + ([-1] if MOSAIC_SCENES[k].get("ignore") else [])
        mine = np.isin(labels, sample_labels)
        assert np.all(boxes[mine, 0] >= x0) and np.all(boxes[mine, 2] <= x1), (k, boxes[mine], tiles[k])
        assert np.all(boxes[mine, 1] >= y0) and np.all(boxes[mine, 3] <= y1), (k, boxes[mine], tiles[k])
        outside = np.ones((80, 96), bool)
        outside[y0:y1, x0:x1] = False
        for label in sample_labels:  # no sample's pixels spill out of its tile
            assert not (colour_mask(out, label) & outside).any(), (k, label)


def test_mosaic_uses_all_four_samples_and_fills_gaps_with_gray():
    cfg = YoloAugmentationConfig(jitter=0.3, horizontal_flip=0, **NO_COLOUR, **EVERY_PIECE)
    seen, gray = set(), 0
    for seed in range(10):
        out, _, labels = mosaic(mosaic_samples(seed), 96, 80, 0.2, cfg, random.Random(seed))
        seen |= {int(label) // 3 for label in labels if label >= 0}
        gray += (np.abs(np.asarray(out).astype(int) - FILL).max(-1) == 0).any()
    assert seen == {0, 1, 2, 3}
    assert gray > 0  # jitter padding shows the 114 fill


# -- hsv_jitter ---------------------------------------------------------------------------------------------

def test_hsv_jitter_neutral_settings_are_the_identity():
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    out = hsv_jitter(noise, 0.0, 1.0, 1.0, random.Random(0))
    assert out.size == noise.size and np.array_equal(np.asarray(out), np.asarray(noise))


def test_adjust_hsv_rotates_hue_and_scales_saturation_and_value():
    red = Image.new("RGB", (4, 4), (255, 0, 0))
    assert adjust_hsv(red, 1 / 3, 1, 1).getpixel((0, 0)) == (0, 255, 0)
    assert adjust_hsv(red, -1 / 3, 1, 1).getpixel((0, 0)) == (0, 0, 255)
    assert adjust_hsv(red, 0, 0.5, 1).getpixel((0, 0)) == (255, 128, 128)
    assert adjust_hsv(red, 0, 1, 0.5).getpixel((0, 0)) == (128, 0, 0)


def test_hsv_jitter_moves_colours_not_geometry():
    image, _, _ = scene(1, [0, 2, 4, 7])
    before = np.asarray(image).astype(int)
    chroma_before = before.max(-1) - before.min(-1)
    values = []
    for seed in range(20):
        out = np.asarray(hsv_jitter(image, 0.5, 1.5, 1.5, random.Random(seed))).astype(int)
        chroma = out.max(-1) - out.min(-1)
        assert np.all(chroma[chroma_before == 0] <= 1)  # gray stays gray: no object grows or moves
        assert np.all(chroma[chroma_before > 0] >= 60)  # coloured stays coloured
        values.append(out[chroma_before == 0].mean() / 100)
    assert min(values) >= 1 / 1.5 - 0.02 and max(values) <= 1.5 + 0.02
    assert min(values) < 0.9 and max(values) > 1.1  # exposure goes both ways


def test_hsv_jitter_draws_within_the_configured_ranges():
    base = np.array([150, 90, 60])  # hue 1/18, saturation 0.6, value ~0.59: far from any clipping
    image = Image.new("RGB", (2, 2), tuple(int(v) for v in base))
    hues, sats, vals = [], [], []
    for seed in range(40):
        r, g, b = (np.asarray(hsv_jitter(image, 0.1, 1.5, 1.5, random.Random(seed)))[0, 0] / 255).tolist()
        hi, lo = max(r, g, b), min(r, g, b)
        h = ((g - b) / (hi - lo) / 6) % 1 if hi == r else ((2 + (b - r) / (hi - lo)) / 6 if hi == g
                                                          else (4 + (r - g) / (hi - lo)) / 6)
        hues.append((h - 1 / 18 + 0.5) % 1 - 0.5)
        sats.append((hi - lo) / hi / 0.6)
        vals.append(hi / (150 / 255))
    assert -0.1 - 0.01 <= min(hues) < -0.03 and 0.03 < max(hues) <= 0.1 + 0.01
    for scales in (sats, vals):
        assert 1 / 1.5 - 0.03 <= min(scales) < 0.9 and 1.1 < max(scales) <= 1.5 + 0.03


# -- YoloAugment --------------------------------------------------------------------------------------------

class Loader:
    """load(i) over in-memory scenes, counting calls; indices in `bad` raise ImageError."""

    def __init__(self, samples, bad=()):
        self.samples, self.bad, self.calls = samples, set(bad), []

    def __call__(self, i: int):
        self.calls.append(i)
        if i in self.bad:
            raise ImageError(f"item {i}: broken")
        return self.samples[i]


@pytest.mark.parametrize("seed", range(3))
def test_yolo_augment_keeps_boxes_on_objects_with_and_without_mosaic(seed):
    load = Loader(mosaic_samples(seed))
    aug = YoloAugment(80, 64, YoloAugmentationConfig(mosaic_prob=0.5, vertical_flip=0.5, **NO_COLOUR, **EVERY_PIECE), seed=seed)
    mosaics = singles = 0
    for n in range(8):
        load.calls.clear()
        out, boxes, labels = aug(load, n % 4, 4)
        assert out.size == (80, 64) and load.calls[0] == n % 4
        mosaics += len(load.calls) == 4
        singles += len(load.calls) == 1
        check_boxes(out, boxes, labels, list(range(12)) + [-1])
        if len(load.calls) == 1:
            own = MOSAIC_SCENES[n % 4]["labels"] + [-1]
            assert set(labels.tolist()) <= set(own)
        else:
            assert n % 4 not in load.calls[1:]  # 3 other items (drawn with replacement)
    assert mosaics + singles == 8 and mosaics and singles


def test_yolo_augment_is_deterministic_for_a_seed():
    cfg = YoloAugmentationConfig(mosaic_prob=0.5)

    def run(seed):
        aug, load = YoloAugment(64, 64, cfg, seed=seed), Loader(mosaic_samples(0))
        return [aug(load, n % 4, 4) for n in range(6)]

    a, b, c = run(7), run(7), run(8)
    for (ia, ba, la), (ib, bb, lb) in zip(a, b):
        assert np.array_equal(np.asarray(ia), np.asarray(ib)) and np.array_equal(ba, bb) and np.array_equal(la, lb)
    assert any(not np.array_equal(np.asarray(x[0]), np.asarray(y[0])) for x, y in zip(a, c))


def test_bad_extra_images_are_replaced_and_never_reported():
    samples = mosaic_samples(1) + mosaic_samples(2)[:2]  # 6 items; 2 and 3 are bad files
    load = Loader(samples, bad={2, 3})
    aug = YoloAugment(64, 64, YoloAugmentationConfig(mosaic_prob=1.0, **NO_COLOUR, **EVERY_PIECE), seed=0)
    for n in range(10):
        load.calls.clear()
        out, boxes, labels = aug(load, 0, 6)
        good = [i for i in load.calls if i not in (2, 3)]
        assert load.calls[0] == 0 and len(good) <= 4
        assert not set(labels.tolist()) & set(range(6, 12))  # nothing from the bad files
        if len(good) < 4:  # a tile ran out of tries: the fall-back is the item alone
            assert set(labels.tolist()) <= {0, 1, 2, -1}
        check_boxes(out, boxes, labels, list(range(12)) + [-1])


def test_all_extras_bad_falls_back_to_the_single_image():
    load = Loader(mosaic_samples(0), bad={1, 2, 3})
    aug = YoloAugment(64, 64, YoloAugmentationConfig(mosaic_prob=1.0, **NO_COLOUR, **EVERY_PIECE), seed=0, tries=3)
    out, boxes, labels = aug(load, 0, 4)
    assert load.calls[0] == 0 and sorted(set(load.calls[1:])) <= [1, 2, 3] and len(load.calls) == 1 + 3
    assert set(labels.tolist()) <= {0, 1, 2, -1}
    check_boxes(out, boxes, labels, [0, 1, 2, -1])


def test_the_items_own_bad_image_raises_for_the_dataset_to_report():
    load = Loader(mosaic_samples(0), bad={2})
    with pytest.raises(ImageError):
        YoloAugment(64, 64, YoloAugmentationConfig(mosaic_prob=1.0), seed=0)(load, 2, 4)
    assert load.calls == [2]


def test_config_rejects_nonsense():
    for bad in (dict(jitter=0.5), dict(saturation=0.5), dict(exposure=0), dict(mosaic_prob=1.5),
                dict(hue=0.7), dict(mosaic_min_ratio=0.6), dict(horizontal_flip=-0.1)):
        with pytest.raises(ValueError):
            YoloAugmentationConfig(**bad)


# -- the dataset: DetectionImages / DetectionData ------------------------------------------------------------

def write_items(folder, count: int, same: bool = False, bad=()) -> list[ImageBoxes]:
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(count):
        image, boxes, labels = scene(0 if same else i, [i % 12 if not same else 0])
        path = folder / f"{i:03d}.png"
        if i in bad:
            path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
        else:
            image.save(path)
        items.append(ImageBoxes(image=path, boxes=boxes, labels=labels))
    return items


def test_a_bad_file_is_reported_once_per_epoch_even_with_mosaic(tmp_path):
    items = write_items(tmp_path / "images", 6, bad={4})
    dataset = DetectionImages(items, 64, 64, (0.5,) * 3, (0.25,) * 3, YoloAugmentationConfig(mosaic_prob=1.0),
                              max_pixels=10_000_000, seed=0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, collate_fn=collate_detection)
    for _ in range(2):
        skipped, good = [], 0
        for images, targets, bad in loader:
            skipped += bad
            good += len(targets)
            assert images.shape[1:] == (3, 64, 64)
            assert all(t.original_size is None and t.width == 64 for t in targets)
        assert good == 5 and len(skipped) == 1 and skipped[0].startswith(str(items[4].image) + "\t")


@pytest.mark.parametrize("kind", ["yolo", "box"])
def test_dataloader_workers_draw_different_augmentations(tmp_path, kind):
    from transferkit.vision.box_augment import DetectionAugmentationConfig

    cfg = YoloAugmentationConfig(mosaic_prob=0.5) if kind == "yolo" else DetectionAugmentationConfig()
    items = write_items(tmp_path / "images", 4, same=True)  # four identical items

    def batches(workers):
        torch.manual_seed(0)
        dataset = DetectionImages(items, 48, 48, (0.5,) * 3, (0.25,) * 3, cfg, max_pixels=10_000_000, seed=3)
        loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=workers,
                                             collate_fn=collate_detection)
        return [images[0] for images, _, _ in loader]

    parallel = batches(2)
    # Items 0 and 1 are the first draws of workers 0 and 1: a shared stream would make them equal.
    assert not torch.equal(parallel[0], parallel[1])
    # In the main process the seeded stream is kept: the same seed gives the same images.
    serial = batches(0)
    assert all(torch.equal(a, b) for a, b in zip(serial, batches(0)))
    assert not torch.equal(serial[0], serial[1])


def test_detection_data_augments_with_the_yolo_section_without_detectnet_keys(tmp_path):
    for split in ("train", "val"):
        images, labels = tmp_path / split / "images", tmp_path / split / "labels"
        labels.mkdir(parents=True)
        for item in write_items(images, 3):
            lines = [f"c{int(lab)} 0 0 0 {x1:.1f} {y1:.1f} {x2:.1f} {y2:.1f} 0 0 0 0 0 0 0"
                     for (x1, y1, x2, y2), lab in zip(item.boxes, item.labels)]
            (labels / f"{item.image.stem}.txt").write_text("\n".join(lines) + "\n")
    # The YOLO spec's augmentation section: none of DetectNet's zoom/translate/brightness/contrast keys.
    augmentation = YoloAugmentationConfig(mosaic_prob=1.0)
    data = SimpleNamespace(format="kitti", train_images=str(tmp_path / "train/images"),
                           train_labels=str(tmp_path / "train/labels"), val_images=str(tmp_path / "val/images"),
                           val_labels=str(tmp_path / "val/labels"), yolo_names=None, classes=None,
                           target_class_mapping={}, image_width=64, image_height=48, max_image_pixels=10_000_000,
                               cache="none", cache_dir=None,
                           augmentation=augmentation)
    spec = SimpleNamespace(data=data, train=SimpleNamespace(seed=0, num_workers=0, batch_size=2),
                           evaluation=SimpleNamespace(batch_size=2))
    dm = DetectionData(spec, (0.5,) * 3, (0.25,) * 3)
    train = dm.train_dataloader()
    assert isinstance(train.dataset.augment, YoloAugment)
    images, targets, bad = next(iter(train))
    assert images.shape == (2, 3, 48, 64) and not bad
    assert dm.val_dataloader().dataset.augment is None


@pytest.mark.parametrize("visible", [0.2, 0.5])
def test_boxes_with_less_than_min_visible_of_their_area_left_are_dropped(visible):
    from transferkit.vision.box_augment import apply_affine

    image = Image.new("RGB", (100, 100), (128, 128, 128))
    boxes = np.array([[30, 10, 70, 50], [50, 50, 90, 90], [0, 0, 20, 20]], np.float32)
    _, kept, labels = apply_affine(image, boxes, np.array([0, 1, 2]), 100, 100, 1.0, 1.0, -40.0, 0.0, False, False,
                                   min_box_size=2.0, min_visible=0.3)
    # After the shift: box 0 spans x -10..30 (75 % visible), box 1 x 10..50 (all), box 2 x -40..-20 (gone).
    assert labels.tolist() == [0, 1]
    _, kept, labels = apply_affine(image, np.array([[30, 10, 70, 50]], np.float32), np.array([0]), 100, 100, 1.0, 1.0,
                                   -60.0, 0.0, False, False, min_box_size=2.0, min_visible=visible)
    # Shifted by 60 px: x -30..10, a quarter of the box is left.
    assert labels.tolist() == ([0] if visible <= 0.25 else [])

