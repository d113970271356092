"""Classification data: ImageFolder and CSV readers, transforms, and the DataModule.

Bad images never stop a run: a file whose header cannot be read is skipped when the dataset is
scanned, a file that fails to decode later is dropped from its batch; both are counted and named
in the run's summary and in metrics.json.
"""
from __future__ import annotations

import csv
import logging
import random
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info
from torchvision.transforms import v2 as T

from ...vision.images import IMAGE_EXTENSIONS, ImageError, list_images, load_image, skipped_entry
from ...errors import DataError, SpecError
from ...spec import require_path
from .spec import ClassificationSpec

log = logging.getLogger("transferkit")


@dataclass
class Samples:
    """(path, class index) pairs plus everything that was skipped while reading them."""

    items: list[tuple[Path, int]]
    classes: list[str]
    skipped: dict[str, str] = field(default_factory=dict)  # path -> reason
    warnings: list[str] = field(default_factory=list)


def read_image_folder(root: Path, key: str, classes: list[str] | None = None) -> Samples:
    """One sub-folder per class. With `classes` given, folders map onto that order."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{key}: {root} has no class sub-folders; expected {root}/<class>/<image files>")
    names = [f.name for f in folders]
    if classes is None:
        classes = names
    index = {c.lower(): i for i, c in enumerate(classes)}
    samples = Samples(items=[], classes=list(classes))
    for folder in folders:
        if folder.name.lower() not in index:
            raise DataError(
                f"{key}: class folder '{folder.name}' is not among the training classes {classes}; "
                "remove it or train with it"
            )
        images = list_images(folder)
        ignored = [p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in IMAGE_EXTENSIONS]
        for p in ignored:
            samples.skipped[str(p)] = f"not an image extension ({', '.join(sorted(IMAGE_EXTENSIONS))})"
        if not images:
            samples.warnings.append(f"{key}: class folder {folder} has no images")
        samples.items.extend((p, index[folder.name.lower()]) for p in images)
    return samples


def read_csv_list(path: Path, key: str, classes: list[str] | None = None) -> Samples:
    """CSV with a `path,label` header; relative paths are relative to the CSV's folder."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{key}: {path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from e
    rows = list(csv.reader(text.splitlines()))
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["path", "label"]:
        raise DataError(f"{key}: {path}:1: expected a header line 'path,label'")
    parsed: list[tuple[int, Path, str]] = []
    skipped: dict[str, str] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            skipped[f"{path}:{line_no}"] = f"expected 2 fields path,label, got {len(row)}"
            continue
        image = Path(row[0].strip())
        image = image if image.is_absolute() else path.parent / image
        if not image.is_file():
            skipped[f"{path}:{line_no}"] = f"image {image} does not exist"
            continue
        parsed.append((line_no, image, row[1].strip()))
    names = sorted({label for _, _, label in parsed})
    if classes is None:
        classes = names
    index = {c.lower(): i for i, c in enumerate(classes)}
    samples = Samples(items=[], classes=list(classes), skipped=skipped)
    for line_no, image, label in parsed:
        if label.lower() not in index:
            raise DataError(f"{key}: {path}:{line_no}: label '{label}' is not among the training classes {classes}")
        samples.items.append((image, index[label.lower()]))
    return samples


def read_split(dir_value: str | None, csv_value: str | None, dir_key: str, csv_key: str,
               classes: list[str] | None) -> Samples | None:
    if dir_value and csv_value:
        raise SpecError(f"give either {dir_key} or {csv_key}, not both")
    if dir_value:
        return read_image_folder(require_path(dir_key, dir_value, "dir"), dir_key, classes)
    if csv_value:
        return read_csv_list(require_path(csv_key, csv_value, "file"), csv_key, classes)
    return None


def scan_images(samples: Samples, max_pixels: int) -> None:
    """Decode every image once before training; drop (and name) the ones that cannot be used.

    A full decode, not a header read: a truncated file must be reported even when it would sit in
    a batch that drop_last or limit_train_batches never loads. For the few hundred to few thousand
    images transferkit targets this costs about a millisecond per image.
    """
    good = []
    for path, label in samples.items:
        try:
            load_image(path, max_pixels=max_pixels)
        except ImageError as e:
            samples.skipped[str(path)] = str(e)
            continue
        good.append((path, label))
    samples.items = good


def build_transforms(spec: ClassificationSpec, mean, std, train: bool) -> T.Compose:
    size = spec.data.image_size
    aug = spec.data.augmentation
    tail = [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(mean=list(mean), std=list(std))]
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


class ImageDataset(Dataset):
    """Returns (image tensor, label) or, for a file that fails to decode, (None, path)."""

    def __init__(self, items: list[tuple[Path, int]], transform, max_pixels: int):
        self.items = items
        self.transform = transform
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, label = self.items[i]
        try:
            image = load_image(path, max_pixels=self.max_pixels)
        except ImageError as e:
            return None, skipped_entry(path, e)
        return self.transform(image), label


def stack_images(images: list[torch.Tensor], channels_last: bool = False) -> torch.Tensor:
    """[C,H,W] tensors -> one [N,C,H,W] batch, laid out channels_last if asked.

    In a DataLoader worker the batch is written straight into shared memory, as torch's default_collate
    does: a plain torch.stack there costs a second copy of the whole batch when it is sent to the main
    process. Building it channels_last here, in the worker, spares the training step that conversion
    (TaskModule.prepare_images then finds it already done).
    """
    first = images[0]
    n, (c, h, w) = len(images), first.shape
    if get_worker_info() is not None:
        flat = first.new(first._typed_storage()._new_shared(n * first.numel(), device=first.device))
    else:
        flat = first.new_empty(n * first.numel())
    out = flat.view(n, h, w, c).permute(0, 3, 1, 2) if channels_last else flat.view(n, c, h, w)
    return torch.stack(images, 0, out=out)


def collate_skipping(batch, channels_last: bool = False):
    """Stack the good samples; carry the names of the bad ones so the module can count them."""
    good = [(x, y) for x, y in batch if x is not None]
    bad = [y for x, y in batch if x is None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), bad
    images = stack_images([x for x, _ in good], channels_last)
    labels = torch.tensor([y for _, y in good], dtype=torch.long)
    return images, labels, bad


class ClassificationData(pl.LightningDataModule):
    def __init__(self, spec: ClassificationSpec, mean, std, classes: list[str] | None = None):
        super().__init__()
        self.spec = spec
        self.mean, self.std = mean, std
        d = spec.data
        wanted = classes or d.classes
        train = read_split(d.train_dir, d.train_csv, "data.train_dir", "data.train_csv", wanted)
        val = read_split(d.val_dir, d.val_csv, "data.val_dir", "data.val_csv", train.classes if train else wanted)
        if train is None and val is None:
            raise SpecError("no data: set data.train_dir (or data.train_csv), e.g. data.train_dir=demo/train")
        self.classes = (train or val).classes
        self.skipped: dict[str, str] = {}
        self.warnings: list[str] = []
        for split in (train, val):
            if split is not None:
                scan_images(split, d.max_image_pixels)
                self.skipped.update(split.skipped)
                self.warnings.extend(split.warnings)
        if train is not None and val is None:
            if d.val_split <= 0:
                raise SpecError("no validation data: set data.val_dir / data.val_csv, or data.val_split > 0")
            train, val = _split(train, d.val_split, spec.train.seed)
        self.train_items = train.items if train else []
        self.val_items = val.items
        if not self.val_items:
            where = "data.val_dir / data.val_csv" if (d.val_dir or d.val_csv) else f"data.val_split={d.val_split}"
            raise DataError(f"{where} left no usable validation images; add images or set data.val_dir")
        if train is not None:
            empty = [c for i, c in enumerate(self.classes) if not any(y == i for _, y in self.train_items)]
            if empty:
                raise DataError(f"data.train_dir: no usable training images for class(es) {empty}; add images "
                                "or remove the class")
            missing_val = [c for i, c in enumerate(self.classes) if not any(y == i for _, y in self.val_items)]
            if missing_val:
                self.warnings.append(f"validation data has no images of class(es) {missing_val}")
        for text in self.warnings:
            log.warning(text)
        for path, reason in list(self.skipped.items())[:20]:
            log.warning("skipped %s: %s", path, reason)
        if len(self.skipped) > 20:
            log.warning("... and %d more skipped files (all listed in metrics.json)", len(self.skipped) - 20)

    def _loader(self, items, train: bool, batch_size: int) -> DataLoader:
        workers = self.spec.train.num_workers
        dataset = ImageDataset(items, build_transforms(self.spec, self.mean, self.std, train), self.spec.data.max_image_pixels)
        # Training batches arrive in the layout the network trains in; evaluation, calibration and
        # export keep plain NCHW batches (ONNX Runtime and numpy consumers expect them).
        collate = partial(collate_skipping, channels_last=train and self.spec.train.channels_last)
        return DataLoader(
            dataset, batch_size=batch_size, shuffle=train, num_workers=workers, collate_fn=collate,
            drop_last=train and len(items) > batch_size, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        if not self.train_items:
            raise SpecError("data.train_dir / data.train_csv has no usable images to train on")
        return self._loader(self.train_items, True, self.spec.train.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_items, False, self.spec.evaluation.batch_size)

    def calibration_batches(self, count: int, batch_size: int = 16):
        """Up to `count` training images with the evaluation transform (INT8 calibration)."""
        items = (self.train_items or self.val_items)[:count]
        loader = self._loader(items, False, batch_size)
        for images, _, _ in loader:
            if len(images):
                yield images


def _split(samples: Samples, fraction: float, seed: int) -> tuple[Samples, Samples]:
    """Hold out `fraction` of each class (at least one image) as validation, reproducibly."""
    rng = random.Random(seed)
    train, val = [], []
    for c in range(len(samples.classes)):
        items = [it for it in samples.items if it[1] == c]
        rng.shuffle(items)
        n_val = max(1, round(len(items) * fraction)) if len(items) > 1 else 0
        val.extend(items[:n_val])
        train.extend(items[n_val:])
    return (Samples(train, samples.classes, samples.skipped, samples.warnings),
            Samples(val, samples.classes))
