"""Detection data for every detection task: spec keys -> format reader -> DetectionImages -> DetectionData.

Images are resized (val) or augmented (train) to the network input size; boxes and DontCare regions
go through the same transform, so targets are in input pixels. The training augmentation is the
task's `spec.data.augmentation` section itself, chosen by its type:

- `DetectionAugmentationConfig` -> `DetectionAugment` (DetectNet_v2's zoom/shift/flip + colour jitter);
- `YoloAugmentationConfig` -> `YoloAugment` (darknet jitter or 4-image mosaic, then HSV jitter); mosaic
  loads 3 more items through the dataset.

Augmentation draws from one `random.Random(train.seed)`, reseeded per DataLoader worker (see
vision/datasets.py). Each split's images are decoded once before its first loader (VisionData).
"""
from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
from torch.utils.data import Dataset

from ...errors import SpecError
from ...spec import require_path
from ...vision.boxes import DataProblems, DetectionDataset, ImageBoxes
from ...vision.datasets import DetectionImages, VisionData, collate_detection

log = logging.getLogger("transferkit")


def read_detection_split(data, split: str, classes: list[str] | None) -> DetectionDataset | None:
    """Read `data.<split>_images` / `data.<split>_labels` in `data.format`; None when not configured."""
    from ...vision.formats import read_coco, read_kitti, read_yolo

    images_value, labels_value = getattr(data, f"{split}_images"), getattr(data, f"{split}_labels")
    if not images_value and not labels_value:
        return None
    images = require_path(f"data.{split}_images", images_value, "dir")
    mapping = dict(data.target_class_mapping)
    if data.format == "coco":
        labels = require_path(f"data.{split}_labels", labels_value, "file")
        return read_coco(images, labels, classes, mapping)
    labels = require_path(f"data.{split}_labels", labels_value, "dir")
    if data.format == "kitti":
        return read_kitti(images, labels, classes, mapping)
    names = require_path("data.yolo_names", data.yolo_names, "file")
    return read_yolo(images, labels, names, classes, mapping)


class DetectionData(VisionData):
    """Train/val ImageBoxes items for any detection task, batches (images, targets, skipped) of
    `DetectionImages`; training images are augmented by `spec.data.augmentation` (module docstring)."""

    def __init__(self, spec, mean, std, classes: list[str] | None = None):
        d = spec.data
        super().__init__(batch_size=spec.train.batch_size, eval_batch_size=spec.evaluation.batch_size,
                         num_workers=spec.train.num_workers, max_pixels=d.max_image_pixels,
                         cache=d.cache, cache_dir=d.cache_dir,
                         channels_last=getattr(spec.train, "channels_last", False),
                         spec_keys={"train": "data.train_images", "val": "data.val_images"})
        self.spec = spec
        self.mean, self.std = mean, std
        wanted = classes or d.classes
        train = read_detection_split(d, "train", wanted)
        if train is not None and not any(len(it.labels) for it in train.items):
            raise SpecError("data.train_labels: no objects of the trained classes in the training labels")
        val = read_detection_split(d, "val", train.classes if train else wanted)
        if train is None and val is None:
            raise SpecError("no data: set data.train_images and data.train_labels (and data.val_*)")
        if val is None:
            raise SpecError("no validation data: set data.val_images and data.val_labels "
                            "(`dataset_convert dataset_convert.val_split=20` makes a split)")
        self.classes = (train or val).classes
        self.train_items = train.items if train else []
        self.val_items = val.items
        self.problems = {"train": train.problems.as_dict() if train else {}, "val": val.problems.as_dict()}
        for split, ds in (("train", train), ("val", val)):
            if ds is not None:
                _log_problems(split, ds.problems)
        if not any(len(it.labels) for it in self.val_items):
            self.warnings.append("the validation labels hold no objects: mAP is undefined (reported as 0)")
            log.warning(self.warnings[-1])

    def image_path(self, item: ImageBoxes) -> Path:
        return Path(item.image)

    def make_dataset(self, items: list, train: bool) -> Dataset:
        d = self.spec.data
        return DetectionImages(items, d.image_width, d.image_height, self.mean, self.std,
                               d.augmentation if train else None, self.max_pixels, self.spec.train.seed,
                               cache=self.image_cache)

    def collate_fn(self, train: bool) -> Callable[[list], tuple]:
        return partial(collate_detection, channels_last=self.stacking(train))


def _log_problems(split: str, problems: DataProblems) -> None:
    for kind, n in problems.counts.items():
        example = problems.examples.get(kind, [""])[0]
        log.warning("%s labels: %d x %s (e.g. %s)", split, n, kind, example)
    for name, n in problems.unmapped_classes.items():
        log.warning("%s labels: %d objects of class '%s' map to no trained class (add it to data.classes or "
                    "data.target_class_mapping)", split, n, name)


def original_scale(target: ImageBoxes, boxes: np.ndarray) -> np.ndarray:
    """Boxes in network-input pixels -> pixels of the original image (for written predictions)."""
    if not target.original_size:
        return boxes
    ow, oh = target.original_size
    sx, sy = ow / target.width, oh / target.height
    return boxes * np.array([sx, sy, sx, sy], dtype=np.float32)


