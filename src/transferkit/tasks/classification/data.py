"""Classification data: the spec's folders or CSV lists -> (path, class index) items -> ClassificationData.

Bad images never stop a run: each split's images are decoded once before the split is first used
and the ones that fail are skipped (VisionData); a file that fails to decode later is dropped from
its batch. Both are counted and named in the run's summary and in metrics.json.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2 as T

from ...errors import DataError, SpecError
from ...spec import require_path
from ...vision.batch_augment import (BatchAugment, EncodedImageDataset, collate_encoded, is_jpeg, square_size,
                                     square_transform)
from ...vision.datasets import ImageDataset, VisionData, normalise
from ...vision.folders import Samples, read_csv_list, read_image_folder
from ...vision.spec import resolve_cache_short_side
from .spec import ClassificationSpec

log = logging.getLogger("transferkit")


def read_split(dir_value: str | None, csv_value: str | None, dir_key: str, csv_key: str,
               classes: list[str] | None) -> Samples | None:
    """The split the spec names by folder or by CSV list; None when neither is set."""
    if dir_value and csv_value:
        raise SpecError(f"give either {dir_key} or {csv_key}, not both")
    if dir_value:
        return read_image_folder(require_path(dir_key, dir_value, "dir"), dir_key, classes)
    if csv_value:
        return read_csv_list(require_path(csv_key, csv_value, "file"), csv_key, classes)
    return None


def build_transforms(spec: ClassificationSpec, mean, std, train: bool) -> T.Compose:
    size = spec.data.image_size
    aug = spec.data.augmentation
    tail = [normalise(mean, std)]
    if not train:
        return T.Compose([T.Resize(int(round(size / 0.875)), antialias=True), T.CenterCrop(size), *tail])
    ops = [T.RandomResizedCrop(size, scale=tuple(aug.random_resized_crop_scale), antialias=True)]
    if aug.horizontal_flip:
        ops.append(T.RandomHorizontalFlip(aug.horizontal_flip))
    if aug.vertical_flip:
        ops.append(T.RandomVerticalFlip(aug.vertical_flip))
    if aug.color_jitter or aug.hue:
        ops.append(T.ColorJitter(aug.color_jitter, aug.color_jitter, aug.color_jitter, aug.hue))
    return T.Compose([*ops, *tail])


def build_batch_augment(spec: ClassificationSpec, mean, std) -> BatchAugment:
    """The data.augmentation keys as the batched augmentation data.augment_on=device runs on the training device."""
    aug = spec.data.augmentation
    return BatchAugment(spec.data.image_size, mean, std, scale=tuple(aug.random_resized_crop_scale),
                        horizontal_flip=aug.horizontal_flip, vertical_flip=aug.vertical_flip,
                        color_jitter=aug.color_jitter, hue=aug.hue)


class ClassificationData(VisionData):
    """(image path, class index) items from data.train_dir/_csv and data.val_dir/_csv, val held out of
    train by data.val_split when no val data is given; batches are (images, labels, skipped)."""

    def __init__(self, spec: ClassificationSpec, mean, std, classes: list[str] | None = None):
        d = spec.data
        train_key = "data.train_csv" if d.train_csv and not d.train_dir else "data.train_dir"
        held_out = not (d.val_dir or d.val_csv)
        val_key = f"data.val_split={d.val_split} of {train_key}" if held_out else (
            "data.val_csv" if d.val_csv and not d.val_dir else "data.val_dir")
        super().__init__(batch_size=spec.train.batch_size, eval_batch_size=spec.evaluation.batch_size,
                         num_workers=spec.train.num_workers, max_pixels=d.max_image_pixels,
                         cache=d.cache, cache_dir=d.cache_dir,
                         cache_short_side=resolve_cache_short_side(d.cache_short_side, d.image_size),
                         channels_last=spec.train.channels_last, spec_keys={"train": train_key, "val": val_key})
        self.spec = spec
        self.mean, self.std = mean, std
        # data.augment_on=device: the train split's images reach the module as uint8 squares (augmented there).
        # When the network trains on a CUDA GPU and nothing is cached, JPEG files go further: the workers hand
        # over their bytes and the module decodes them on the GPU (see vision/batch_augment.py). The task may
        # set `decode_on_device` itself (tests do, to run that path on the CPU).
        self.augment_on_device = d.augment_on == "device"
        self.decode_on_device = (self.augment_on_device and d.cache == "none" and spec.train.accelerator != "cpu"
                                 and torch.cuda.is_available())
        self.sends_encoded = False  # decided when the training loader is built
        wanted = classes or d.classes
        train = read_split(d.train_dir, d.train_csv, "data.train_dir", "data.train_csv", wanted)
        val = read_split(d.val_dir, d.val_csv, "data.val_dir", "data.val_csv", train.classes if train else wanted)
        if train is None and val is None:
            raise SpecError("no data: set data.train_dir (or data.train_csv), e.g. data.train_dir=demo/train")
        self.classes = (train or val).classes
        self.has_train = train is not None
        for key, split in ((train_key, train), (val_key, val)):
            if split is not None:
                self.record_skipped(key, split.skipped, "that could not be read")
                self.warnings.extend(split.warnings)
        if train is not None and val is None:
            if d.val_split <= 0:
                raise SpecError("no validation data: set data.val_dir / data.val_csv, or data.val_split > 0")
            # Held out before any image is decoded, so evaluate (which never checks train) holds out the same val.
            self.train_items, self.val_items = self.split_validation(train.items, d.val_split, spec.train.seed,
                                                                     key=lambda item: item[1])
        else:
            self.train_items = train.items if train else []
            self.val_items = val.items
        self._check_val()
        self._check_train()
        for text in self.warnings:
            log.warning(text)

    def image_path(self, item: tuple[Path, int]) -> Path:
        return item[0]

    def make_dataset(self, items: list, train: bool) -> Dataset:
        if train and self.augment_on_device:
            size = self.spec.data.image_size
            self.sends_encoded = self.decode_on_device and all(is_jpeg(path) for path, _ in items)
            if self.sends_encoded:
                log.info("data.augment_on=device: training JPEGs are decoded on the training device")
                return EncodedImageDataset(items, size, self.max_pixels)
            if self.decode_on_device:
                log.info("data.augment_on=device: not every training image is a JPEG, so the DataLoader workers "
                         "decode them (to %d px squares)", square_size(size))
            return ImageDataset(items, square_transform(size), self.max_pixels, self.image_cache)
        return ImageDataset(items, build_transforms(self.spec, self.mean, self.std, train), self.max_pixels,
                            self.image_cache)

    def collate_fn(self, train: bool) -> Callable[[list], tuple]:
        # TaskData.loader builds the dataset first, so make_dataset has decided `sends_encoded` by now.
        if train and self.sends_encoded:
            return collate_encoded
        return super().collate_fn(train)

    def after_scan(self, split: str) -> None:
        if split == "train":
            self._check_train()
        else:
            self._check_val()
            if self.has_train:
                missing = [c for i, c in enumerate(self.classes) if not any(y == i for _, y in self.val_items)]
                if missing:
                    self.warnings.append(f"validation data has no images of class(es) {missing}")
                    log.warning(self.warnings[-1])

    def _check_train(self) -> None:
        if not self.has_train:
            return
        empty = [c for i, c in enumerate(self.classes) if not any(y == i for _, y in self.train_items)]
        if empty:
            raise DataError(f"{self.spec_keys['train']}: no usable training images for class(es) {empty}; add images "
                            "or remove the class")

    def _check_val(self) -> None:
        if not self.val_items:
            raise DataError(f"{self.spec_keys['val']} left no usable validation images; add images or set data.val_dir")

