"""Segmentation data: spec keys -> class table -> image/mask pairs (vision/masks.py) -> SegmentationData.

Batches are `(images float32 [N, 3, H, W] normalised, masks int64 [N, H, W], skipped entries)`;
masks hold training indices and `data.ignore_index`. Evaluation resizes image and mask to the
input size (bilinear / nearest); training augments both together with torchvision's transforms.v2
(`SegmentationTransform`): a random zoom of the input-size image, a rotation, a random crop back to
the input size (the mask filled with ignore_index where no image is), flips, then colour jitter on
the image only. Masks are only ever resampled nearest-neighbour, so they keep class indices.

Randomness: the augmentation draws from torch's global generator, which Lightning seeds from
train.seed in the main process and DataLoader workers seed per worker.

Each split is checked once before its first loader (TaskData.scan): its images are decoded
(VisionData) and so are its masks (`scan_targets`): unreadable masks are skipped, pixels of ids or
colours in no class are counted per id with their files (they train as ignore_index), and the
training split's pixels per class are kept for `loss.class_weights: auto` (`pixel_counts`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as nnf
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

from ...data.items import skipped_entry
from ...errors import DataError, SpecError
from ...spec import require_path
from ...vision.datasets import VisionData, stack_images
from ...vision.cache import ImageCache, read_image
from ...vision.images import ImageError, load_image
from ...vision.masks import (ClassTable, MaskProblems, SegItem, coco_class_table, load_coco,
                             load_target, pair_masks, read_coco_masks, scan_targets)
from .spec import SegAugmentationConfig

log = logging.getLogger("transferkit")


# -- the class table ------------------------------------------------------------------------------

def class_table(data: Any, classes: list[str] | None = None) -> ClassTable:
    """The class table of a spec's `data` section. `classes` are a trained model's class names (evaluate,
    inference): they win, and a data.classes that names other classes is refused."""
    if data.classes:
        table = ClassTable.build(data.classes, data.ignore_index)
        if classes is not None and [c.lower() for c in classes] != [n.lower() for n in table.names]:
            raise SpecError(f"data.classes {table.names} are not the model's classes {list(classes)}; give the "
                            "model's classes in its order, or leave data.classes empty")
        return table
    if classes is not None:
        return ClassTable.build(list(classes), data.ignore_index)
    if data.format == "coco":
        source = data.train_masks or data.val_masks
        if source:
            return coco_class_table(load_coco(require_path("data.train_masks", source, "file")), data.ignore_index)
    raise SpecError("data.classes is not set: list the classes in mask-id order, e.g. "
                    "data.classes=[background,road,car] (class i is mask value i)")


def read_split(data: Any, split: str, table: ClassTable) -> tuple[list[SegItem], MaskProblems] | None:
    """The (items, problems) of `data.<split>_images` / `data.<split>_masks`; None when not configured."""
    images_key, masks_key = f"data.{split}_images", f"data.{split}_masks"
    images_value, masks_value = getattr(data, f"{split}_images"), getattr(data, f"{split}_masks")
    if not images_value and not masks_value:
        return None
    images = require_path(images_key, images_value, "dir")
    problems = MaskProblems()
    if data.format == "coco":
        items = read_coco_masks(images, require_path(masks_key, masks_value, "file"), table, problems)
    else:
        items = pair_masks(images, require_path(masks_key, masks_value, "dir"), problems, images_key, masks_key)
    return items, problems


# -- transforms ---------------------------------------------------------------------------------

def resize_mask(mask: torch.Tensor | np.ndarray, width: int, height: int) -> torch.Tensor:
    """Class indices [H, W] resized nearest-neighbour with pixel-centre alignment (like bilinear's), int64."""
    tensor = torch.as_tensor(np.asarray(mask) if isinstance(mask, np.ndarray) else mask)
    if tuple(tensor.shape[-2:]) == (height, width):
        return tensor.to(torch.int64)
    resized = nnf.interpolate(tensor[None, None].to(torch.float64), size=(height, width), mode="nearest-exact")
    return resized[0, 0].to(torch.int64)


class SegmentationTransform:
    """(PIL image, int64 mask [H, W]) -> (normalised float image [3, h, w], int64 mask [h, w]) at the input
    size; `augment=None` only resizes (evaluation), otherwise the module docstring's augmentation."""

    def __init__(self, width: int, height: int, mean, std, ignore_index: int,
                 augment: SegAugmentationConfig | None = None):
        self.width, self.height, self.augment = width, height, augment
        fill = {tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}
        self.normalise = T.Compose([T.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
                                    T.Normalize(mean=list(mean), std=list(std))])
        self.steps: list[Callable] = []
        if augment is None:
            return
        if augment.rotation:
            self.steps.append(T.RandomRotation(augment.rotation, interpolation=InterpolationMode.BILINEAR, fill=fill))
        self.steps.append(T.RandomCrop((height, width), pad_if_needed=True, fill=fill))
        if augment.horizontal_flip:
            self.steps.append(T.RandomHorizontalFlip(augment.horizontal_flip))
        if augment.vertical_flip:
            self.steps.append(T.RandomVerticalFlip(augment.vertical_flip))
        if augment.color_jitter or augment.hue:
            jitter = augment.color_jitter
            self.steps.append(T.ColorJitter(jitter, jitter, jitter, augment.hue))  # passes masks through

    def __call__(self, image: Image.Image, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        width, height = self.width, self.height
        if self.augment is not None:
            low, high = self.augment.scale
            zoom = float(torch.empty(()).uniform_(low, high)) if high > low else float(low)
            width, height = max(1, round(self.width * zoom)), max(1, round(self.height * zoom))
        pixels = tv_tensors.Image(F.pil_to_tensor(image))
        pixels = tv_tensors.Image(F.resize(pixels.as_subclass(torch.Tensor), [height, width], antialias=True))
        target = tv_tensors.Mask(resize_mask(torch.from_numpy(np.ascontiguousarray(mask)), width, height))
        for step in self.steps:
            pixels, target = step(pixels, target)
        return self.normalise(pixels).as_subclass(torch.Tensor), target.as_subclass(torch.Tensor)


# -- datasets -------------------------------------------------------------------------------------

class SegmentationImages(Dataset):
    """SegItems -> (image tensor, mask tensor) at the input size, or (None, skipped_entry) for a bad pair."""

    def __init__(self, items: list[SegItem], table: ClassTable, transform: SegmentationTransform, max_pixels: int,
                 cache: ImageCache | None = None):
        self.items, self.table, self.transform, self.max_pixels = items, table, transform, max_pixels
        self.cache = cache

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        item = self.items[i]
        try:
            image = read_image(item.image, self.max_pixels, self.cache)
            mask = load_target(item, self.table, self.max_pixels)
        except ImageError as e:  # MaskError is one too
            return None, skipped_entry(item.image, e)
        if mask.shape[::-1] != image.size:
            return None, skipped_entry(item.image, f"mask is {mask.shape[1]}x{mask.shape[0]}, the image "
                                                   f"{image.size[0]}x{image.size[1]}")
        return self.transform(image, mask)


def collate_segmentation(batch: list, channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(image, mask) samples -> (images [N,3,H,W], masks int64 [N,H,W], skipped entries)."""
    good = [(x, m) for x, m in batch if x is not None]
    bad = [m for x, m in batch if x is None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), bad
    return stack_images([x for x, _ in good], channels_last), torch.stack([m for _, m in good]), bad


@dataclass(frozen=True)
class ImageInfo:
    """An inference image: its file and its size (w, h) as loaded, to resize the predicted mask back."""

    path: Path
    size: tuple[int, int]


class SegmentationInferenceImages(Dataset):
    """Image files -> (normalised tensor at the input size, ImageInfo), or (None, skipped_entry)."""

    def __init__(self, paths: list[Path], width: int, height: int, mean, std, max_pixels: int):
        self.paths, self.max_pixels = list(paths), max_pixels
        self.transform = SegmentationTransform(width, height, mean, std, ignore_index=0)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = Path(self.paths[i])
        try:
            image = load_image(path, max_pixels=self.max_pixels)
        except ImageError as e:
            return None, skipped_entry(path, e)
        pixels, _ = self.transform(image, np.zeros((1, 1), np.int64))
        return pixels, ImageInfo(path, image.size)


def collate_inference(batch: list, channels_last: bool = False) -> tuple[torch.Tensor, list[ImageInfo], list[str]]:
    """(image, ImageInfo) samples -> (images, infos, skipped entries)."""
    good = [(x, info) for x, info in batch if x is not None]
    bad = [info for x, info in batch if x is None]
    if not good:
        return torch.empty(0), [], bad
    return stack_images([x for x, _ in good], channels_last), [info for _, info in good], bad


def restore_size(mask: torch.Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A predicted mask at the input size -> the image's own size (w, h), nearest-neighbour, int64."""
    return resize_mask(mask, size[0], size[1]).numpy()


# -- the DataModule ------------------------------------------------------------------------------

class SegmentationData(VisionData):
    """Train/val SegItems from the spec (masks folders or COCO JSON), val held out of train by
    data.val_split when no val data is given; batches (images, masks, skipped) as the module docstring."""

    def __init__(self, spec, mean, std, classes: list[str] | None = None):
        d = spec.data
        held_out = not (d.val_images or d.val_masks)
        super().__init__(batch_size=spec.train.batch_size, eval_batch_size=spec.evaluation.batch_size,
                         num_workers=spec.train.num_workers, max_pixels=d.max_image_pixels,
                         cache=d.cache, cache_dir=d.cache_dir,
                         channels_last=getattr(spec.train, "channels_last", False),
                         spec_keys={"train": "data.train_images",
                                    "val": f"data.val_split={d.val_split} of data.train_images" if held_out
                                    else "data.val_images"})
        self.spec, self.mean, self.std = spec, mean, std
        self.table = class_table(d, classes)
        self.classes = self.table.names
        self.class_ids = self.table.index_of_id()
        train, val = read_split(d, "train", self.table), read_split(d, "val", self.table)
        if train is None and val is None:
            raise SpecError("no data: set data.train_images and data.train_masks (and data.val_images, "
                            "data.val_masks), e.g. data.train_images=demo/train/images data.train_masks=demo/train/masks")
        self._problems = {"train": train[1] if train else MaskProblems(), "val": val[1] if val else MaskProblems()}
        self.has_train = train is not None
        if val is None:
            if d.val_split <= 0:
                raise SpecError("no validation data: set data.val_images and data.val_masks, or data.val_split > 0")
            # Held out before any file is decoded, so evaluate (which never scans train) holds out the same val.
            self.train_items, self.val_items = self.split_validation(train[0], d.val_split, spec.train.seed)
        else:
            self.train_items = train[0] if train else []
            self.val_items = val[0]
        for split in ("train", "val"):
            if split == "train" and not self.has_train:
                continue
            for line in self._problems[split].summary_lines():
                log.warning("%s data: %s", split, line)
        if self.has_train and not self.train_items:
            raise DataError("data.train_images: no image has a usable mask; see the problems above "
                            "(image_without_mask, size_mismatch, ...)")
        if not self.val_items:
            raise DataError(f"{self.spec_keys['val']}: no image has a usable mask; see the problems above")
        self._pixels: dict[str, np.ndarray] = {}
        self._scanning: str | None = None

    # -- what a split holds -----------------------------------------------------------------------
    @property
    def problems(self) -> dict[str, dict]:
        """{"train": ..., "val": ...}: counts, examples with files, unknown ids/colours, unmapped categories."""
        return {split: p.as_dict() for split, p in self._problems.items()}

    @property
    def pixel_counts(self) -> np.ndarray:
        """int64 [num_classes]: pixels of each class in the usable training masks (decoded once, lazily)."""
        self.scan("train")
        return self._pixels.get("train", np.zeros(self.table.num_classes, np.int64)).copy()

    # -- TaskData hooks ---------------------------------------------------------------------------
    def image_path(self, item: SegItem) -> Path:
        return item.image

    def scan(self, split: str) -> None:
        self._scanning = split
        try:
            super().scan(split)
        finally:
            self._scanning = None

    def find_unusable(self, items: list) -> dict[str, str]:
        bad = super().find_unusable(items)
        split = self._scanning or "train"
        for reason in bad.values():
            self._problems[split].add("unreadable_image", f"{reason}; left out")
        usable = [it for it in items if str(it.image) not in bad]
        result = scan_targets(usable, self.table, self.max_pixels)
        self._problems[split].merge(result.problems)
        self._pixels[split] = result.pixel_counts
        for line in result.problems.summary_lines():
            log.warning("%s data: %s", split, line)
        bad.update(result.bad)  # their pixels were never counted
        return bad

    def after_scan(self, split: str) -> None:
        counts = self._pixels.get(split)
        if counts is None or (split == "train" and not self.has_train):
            return
        missing = [name for name, n in zip(self.classes, counts) if n == 0]
        if not missing:
            return
        what = ("cannot be learned from these masks" if split == "train"
                else "have no IoU on the validation masks (left out of mIoU)")
        self.warnings.append(f"{split} masks: no pixels of class(es) {missing}; they {what}")
        log.warning(self.warnings[-1])

    def make_dataset(self, items: list, train: bool) -> Dataset:
        d = self.spec.data
        transform = SegmentationTransform(d.image_width, d.image_height, self.mean, self.std, d.ignore_index,
                                          d.augmentation if train else None)
        return SegmentationImages(items, self.table, transform, self.max_pixels, self.image_cache)

    def collate_fn(self, train: bool) -> Callable[[list], tuple]:
        return partial(collate_segmentation, channels_last=self.stacking(train))


# -- dataset_convert ------------------------------------------------------------------------------

def convert_dataset(spec, out_dir: str | Path) -> dict:
    """The dataset_convert verb's work: data.format=coco -> palette PNG masks (output_format=masks), or
    masks -> COCO JSON (output_format=coco), for each configured split into out_dir/<split>. Both splits
    use the training split's class table. Returns a report per split."""
    from ...vision.seg_convert import coco_to_masks, masks_to_coco

    d, c, out_dir = spec.data, spec.dataset_convert, Path(out_dir)
    if d.format == c.output_format:
        raise SpecError(f"data.format is already {d.format}; set dataset_convert.output_format="
                        f"{'coco' if d.format == 'masks' else 'masks'}")
    table = class_table(d)
    reports = {}
    for split in ("train", "val"):
        images_value, masks_value = getattr(d, f"{split}_images"), getattr(d, f"{split}_masks")
        if not images_value and not masks_value:
            continue
        images = require_path(f"data.{split}_images", images_value, "dir")
        if d.format == "coco":
            json_path = require_path(f"data.{split}_masks", masks_value, "file")
            reports[split] = coco_to_masks(images, json_path, out_dir / split, table)
        else:
            masks = require_path(f"data.{split}_masks", masks_value, "dir")
            reports[split] = masks_to_coco(images, masks, out_dir / split / "annotations.json", table,
                                           c.coco_encoding, split)
    if not reports:
        raise SpecError("dataset_convert needs data.train_images and data.train_masks (and/or the val ones)")
    return reports
