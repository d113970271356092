"""Image Datasets, batch stacking and `VisionData`, the TaskData of every image task.

Bad images never stop a run: `VisionData` decodes each image of a split once before its first
loader (`undecodable`) and drops the ones that fail; a file that fails later, inside a Dataset, is
returned as `(None, skipped_entry)` and left out of its batch by the collate functions here. Both
are counted and named under skipped_images.

DetectionImages' randomness: the augmentation draws from one `random.Random(seed)`. In the main
process (num_workers=0) that stream is used as is, so a seed gives the same augmentations every
run; each DataLoader worker reseeds its copy once from `worker_info.seed`, so workers do not repeat
each other.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info
from torchvision.transforms import v2 as T

from ..data.module import TaskData
from .box_augment import (DetectionAugment, DetectionAugmentationConfig, YoloAugment, YoloAugmentationConfig,
                          resize_with_boxes)
from .boxes import ImageBoxes
from .cache import ImageCache, build_cache, read_image
from .images import ImageError, skipped_entry, undecodable


def normalise(mean, std) -> T.Compose:
    """PIL image -> float tensor [3, H, W] normalised with the model's mean and std."""
    return T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(mean=list(mean), std=list(std))])


# -- classification-style items: (path, label) ----------------------------------------------------

class ImageDataset(Dataset):
    """(path, label) items -> (image tensor, label), or (None, skipped_entry) for a file that fails to decode."""

    def __init__(self, items: list[tuple[Path, int]], transform: Callable, max_pixels: int,
                 cache: ImageCache | None = None):
        self.items = items
        self.transform = transform
        self.max_pixels = max_pixels
        self.cache = cache

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, label = self.items[i]
        try:
            image = read_image(path, self.max_pixels, self.cache)
        except ImageError as e:
            return None, skipped_entry(path, e)
        return self.transform(image), label


def stack_images(images: list[torch.Tensor], channels_last: bool = False) -> torch.Tensor:
    """[C,H,W] tensors -> one [N,C,H,W] batch, laid out channels_last if asked.

    In a DataLoader worker the batch is written straight into shared memory, as torch's default_collate
    does: a plain torch.stack there costs a second copy of the whole batch when it is sent to the main
    process. Building it channels_last here, in the worker, spares the training step that conversion
    (VisionModule.prepare_images then finds it already done).
    """
    first = images[0]
    n, (c, h, w) = len(images), first.shape
    if get_worker_info() is not None:
        flat = first.new(first._typed_storage()._new_shared(n * first.numel(), device=first.device))
    else:
        flat = first.new_empty(n * first.numel())
    out = flat.view(n, h, w, c).permute(0, 3, 1, 2) if channels_last else flat.view(n, c, h, w)
    return torch.stack(images, 0, out=out)


def collate_labelled(batch: list, channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(image, label) samples -> (images, labels, skipped entries); the bad samples are only named."""
    good = [(x, y) for x, y in batch if x is not None]
    bad = [y for x, y in batch if x is None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), bad
    images = stack_images([x for x, _ in good], channels_last)
    labels = torch.tensor([y for _, y in good], dtype=torch.long)
    return images, labels, bad


# -- detection items: ImageBoxes --------------------------------------------------------------------

class DetectionImages(Dataset):
    """(normalised image tensor, ImageBoxes in input pixels) or (None, "path\\treason") for a bad file.

    Images are resized (augment=None) or augmented to the network input size; boxes and DontCare
    regions go through the same transform, so targets are in input pixels."""

    def __init__(self, items: list[ImageBoxes], width: int, height: int, mean, std,
                 augment: DetectionAugmentationConfig | YoloAugmentationConfig | None, max_pixels: int,
                 seed: int = 0, cache: ImageCache | None = None):
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
        self.cache = cache
        self.to_tensor = normalise(mean, std)

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int):
        """Item i as (RGB image, boxes, labels), DontCare regions appended with label -1; ImageError if bad."""
        item = self.items[i]
        image = read_image(item.image, self.max_pixels, self.cache)
        # Ignore regions travel through the same transform as boxes, marked with label -1.
        boxes = np.concatenate([item.boxes, item.ignore]).reshape(-1, 4)
        labels = np.concatenate([item.labels, np.full(len(item.ignore), -1, np.int64)])
        return image, boxes, labels

    def _seed_worker(self) -> None:
        """Inside a DataLoader worker, reseed this copy's augmentation rng once from the worker's seed.

        Every worker starts with a copy of the same `random.Random(seed)`; without this they would all
        draw the same augmentations. `worker_info.seed` differs per worker (and per epoch unless the
        workers persist) and derives from torch's seeded generator, so runs stay reproducible."""
        info = get_worker_info()
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


def collate_detection(batch: list, channels_last: bool = False) -> tuple[torch.Tensor, list[ImageBoxes], list[str]]:
    """(image, ImageBoxes) samples -> (images, targets, skipped entries)."""
    good = [(x, t) for x, t in batch if x is not None]
    bad = [t for x, t in batch if x is None]
    if not good:
        return torch.empty(0), [], bad
    return stack_images([x for x, _ in good], channels_last), [t for _, t in good], bad


# -- the DataModule base of image tasks -------------------------------------------------------------

class VisionData(TaskData):
    """TaskData whose items each name one image file (`image_path`): a split is checked by decoding
    every image once, training batches are stacked channels_last when the network trains so."""

    item_kind = "images"

    def __init__(self, *, max_pixels: int, channels_last: bool = False, cache: str = "none",
                 cache_dir: str | None = None, cache_short_side: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.max_pixels = max_pixels
        self.channels_last = channels_last
        # data.cache: the split check below decodes every image anyway; with a cache it keeps the pixels
        # (reduced to cache_short_side where the task's labels allow it: see vision/cache.py).
        self.image_cache = build_cache(cache, max_pixels, cache_dir, cache_short_side)

    def image_path(self, item: Any) -> Path:
        raise NotImplementedError

    def where(self, item: Any) -> str:
        return str(self.image_path(item))

    def find_unusable(self, items: list) -> dict[str, str]:
        paths = [self.image_path(it) for it in items]
        if self.image_cache is not None:
            return self.image_cache.fill(paths, self.item_kind)
        return undecodable(paths, self.max_pixels)

    def stacking(self, train: bool) -> bool:
        """channels_last for training batches only: evaluation, calibration and export keep plain NCHW
        batches (ONNX Runtime and numpy consumers expect them)."""
        return train and self.channels_last

    def collate_fn(self, train: bool) -> Callable[[list], tuple]:
        return partial(collate_labelled, channels_last=self.stacking(train))
