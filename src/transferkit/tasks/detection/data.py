"""Detection data for every detection task: spec keys -> format reader -> Dataset -> DataModule.

Images are resized (val) or augmented (train) to the network input size; boxes and DontCare regions
go through the same transform, so targets are in input pixels. The training augmentation is the
task's `spec.data.augmentation` section itself, chosen by its type:

- `DetectionAugmentationConfig` -> `DetectionAugment` (DetectNet_v2's zoom/shift/flip + colour jitter);
- `YoloAugmentationConfig` -> `YoloAugment` (darknet jitter or 4-image mosaic, then HSV jitter); mosaic
  loads 3 more items through the dataset.

Randomness: the augmentation draws from one `random.Random(train.seed)`. In the main process
(num_workers=0) that stream is used as is, so a seed gives the same augmentations every run; each
DataLoader worker reseeds its copy once from `worker_info.seed`, so workers do not repeat each other.
"""
from __future__ import annotations

import logging

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2 as T

from ...errors import SpecError
from ...spec import require_path
from ...vision.box_augment import (DetectionAugment, DetectionAugmentationConfig, YoloAugment,
                                   YoloAugmentationConfig, resize_with_boxes)
from ...vision.boxes import DataProblems, DetectionDataset, ImageBoxes
from ...vision.images import ImageError, load_image, skipped_entry, undecodable

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


class DetectionImages(Dataset):
    """(normalised image tensor, ImageBoxes in input pixels) or (None, "path\\treason") for a bad file."""

    def __init__(self, items: list[ImageBoxes], width: int, height: int, mean, std,
                 augment: DetectionAugmentationConfig | YoloAugmentationConfig | None, max_pixels: int,
                 seed: int = 0):
        self.items, self.width, self.height = items, width, height
        if augment is None:
            self.augment = None
        elif isinstance(augment, YoloAugmentationConfig):
            self.augment = YoloAugment(width, height, augment, seed)
        elif isinstance(augment, DetectionAugmentationConfig):
            self.augment = DetectionAugment(width, height, augment, seed)
        else:
            raise TypeError(f"augment must be a DetectionAugmentationConfig, a YoloAugmentationConfig or None, "
                            f"not {type(augment)}")
        self._worker_seed: int | None = None  # worker_info.seed this copy's rng was reseeded from
        self.max_pixels = max_pixels
        self.to_tensor = T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True),
                                    T.Normalize(mean=list(mean), std=list(std))])

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int):
        """Item i as (RGB image, boxes, labels), DontCare regions appended with label -1; ImageError if bad."""
        item = self.items[i]
        image = load_image(item.image, max_pixels=self.max_pixels)
        # Ignore regions travel through the same transform as boxes, marked with label -1.
        boxes = np.concatenate([item.boxes, item.ignore]).reshape(-1, 4)
        labels = np.concatenate([item.labels, np.full(len(item.ignore), -1, np.int64)])
        return image, boxes, labels

    def _seed_worker(self) -> None:
        """Inside a DataLoader worker, reseed this copy's augmentation rng once from the worker's seed.

        Every worker starts with a copy of the same `random.Random(seed)`; without this they would all
        draw the same augmentations. `worker_info.seed` differs per worker (and per epoch unless the
        workers persist) and derives from torch's seeded generator, so runs stay reproducible."""
        info = torch.utils.data.get_worker_info()
        if info is not None and self.augment is not None and self._worker_seed != info.seed:
            self.augment.rng.seed(info.seed)
            self._worker_seed = info.seed

    def __getitem__(self, i: int):
        item = self.items[i]
        self._seed_worker()
        try:
            if isinstance(self.augment, YoloAugment):  # may load other items too (mosaic)
                image, boxes, labels = self.augment(self.load, i, len(self.items))
            else:
                image, boxes, labels = self.load(i)
        except ImageError as e:  # only this item's own file: a bad mosaic extra is replaced, not reported
            return None, skipped_entry(item.image, e)
        original = image.size
        if isinstance(self.augment, DetectionAugment):
            image, boxes, labels = self.augment(image, boxes, labels)
        elif self.augment is None:
            image, boxes = resize_with_boxes(image, boxes, self.width, self.height)
        target = ImageBoxes(image=item.image, boxes=boxes[labels >= 0], labels=labels[labels >= 0],
                            ignore=boxes[labels < 0], width=self.width, height=self.height,
                            original_size=None if self.augment is not None else original)
        return self.to_tensor(image), target


def collate_detection(batch):
    good = [(x, t) for x, t in batch if x is not None]
    bad = [t for x, t in batch if x is None]
    if not good:
        return torch.empty(0), [], bad
    return torch.stack([x for x, _ in good]), [t for _, t in good], bad


class DetectionData(pl.LightningDataModule):
    """Train/val DataLoaders of `DetectionImages` for any detection task; training images are augmented
    by `spec.data.augmentation` (see the module docstring)."""

    def __init__(self, spec, mean, std, classes: list[str] | None = None):
        super().__init__()
        self.spec = spec
        self.mean, self.std = mean, std
        d = spec.data
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
        self.skipped: dict[str, str] = {}
        self._scanned: set[str] = set()
        self.warnings: list[str] = []
        for split, ds in (("train", train), ("val", val)):
            if ds is not None:
                _log_problems(split, ds.problems)
        if not any(len(it.labels) for it in self.val_items):
            self.warnings.append("the validation labels hold no objects: mAP is undefined (reported as 0)")
            log.warning(self.warnings[-1])

    def _loader(self, items, train: bool, batch_size: int) -> DataLoader:
        d = self.spec.data
        dataset = DetectionImages(items, d.image_width, d.image_height, self.mean, self.std,
                                  d.augmentation if train else None,
                                  d.max_image_pixels, self.spec.train.seed)
        workers = self.spec.train.num_workers
        return DataLoader(dataset, batch_size=batch_size, shuffle=train, num_workers=workers,
                          collate_fn=collate_detection, drop_last=train and len(items) > batch_size,
                          persistent_workers=workers > 0)

    def _scan(self, split: str) -> None:
        """Decode every image of a split once, before its first loader: bad files are named up front."""
        if split in self._scanned:
            return
        self._scanned.add(split)
        items = self.train_items if split == "train" else self.val_items
        bad = undecodable([it.image for it in items], self.spec.data.max_image_pixels)
        if bad:
            self.skipped.update(bad)
            kept = [it for it in items if str(it.image) not in bad]
            setattr(self, f"{split}_items", kept)
            log.warning("%s: skipped %d image(s) that do not decode (listed under skipped_images)", split, len(bad))

    def train_dataloader(self) -> DataLoader:
        self._scan("train")
        if not self.train_items:
            raise SpecError("data.train_images / data.train_labels has no usable images to train on")
        return self._loader(self.train_items, True, self.spec.train.batch_size)

    def val_dataloader(self) -> DataLoader:
        self._scan("val")
        return self._loader(self.val_items, False, self.spec.evaluation.batch_size)

    def calibration_batches(self, count: int, batch_size: int = 8):
        for images, _, _ in self._loader((self.train_items or self.val_items)[:count], False, batch_size):
            if len(images):
                yield images


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


