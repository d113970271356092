"""Keypoint data: COCO keypoints JSON -> one item per object -> crops with target heatmaps.

Batches are `(crops float32 [N, 3, H, W] normalised, heatmaps [N, K, h, w], weights [N, K],
inverse [N, 2, 3], index [N], skipped entries)`: `inverse` maps crop pixels back to the image's
pixels and `index` names the item, so validation and evaluate can score in image coordinates.

Items: non-crowd objects with at least one labelled keypoint. Crowd objects and objects with no
labelled keypoint stay in the ground truth COCOeval reads (they are ignored there), not in
training. Annotation rows the reader refused are counted per split under `data_problems`; images
that do not decode are dropped with all their objects and named under `skipped_images`.

Augmentation randomness draws from one numpy Generator per Dataset, reseeded once inside each
DataLoader worker from that worker's seed (as vision/datasets.DetectionImages does).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from ...data.items import collate_skipping
from ...engine.meta import ModelMeta
from ...errors import DataError, SpecError
from ...spec import require_path
from ...vision.cache import ImageCache, read_image
from ...vision.datasets import VisionData
from ...vision.images import ImageError, skipped_entry, undecodable
from .codec import encode_heatmaps
from .formats import KeypointSet, coco_sigmas, flip_pairs, read_coco_keypoints
from .geometry import (KeypointAugment, box_to_center_scale, crop_matrix, flip_keypoints, invert_matrix,
                       transform_points, warp_image)
from .spec import UNIFORM_SIGMA, KeypointsSpec

log = logging.getLogger("transferkit")

# Keypoint names (substrings) that make a point "upper body" for half-body augmentation.
UPPER_BODY_WORDS = ("head", "nose", "eye", "ear", "neck", "shoulder", "elbow", "wrist", "hand", "mouth", "chin")


@dataclass(frozen=True)
class KpItem:
    """One object to crop: its image file, COCO ids, box (x, y, w, h px), keypoints (K, 3) and box score."""

    image: Path
    image_id: int
    ann_id: int
    bbox: tuple[float, float, float, float]
    keypoints: np.ndarray
    score: float = 1.0


def upper_body_ids(names: list[str]) -> list[int]:
    return [i for i, n in enumerate(names) if any(w in n.lower() for w in UPPER_BODY_WORDS)]


def resolve_sigmas(value: float | list[float] | None, names: list[str]) -> np.ndarray:
    """OKS sigmas for `names`: the spec's list or single value, else COCO's for its 17 joints, else uniform."""
    if value is None:
        coco = coco_sigmas(names)
        return np.asarray(coco, np.float64) if coco is not None else np.full(len(names), UNIFORM_SIGMA)
    if isinstance(value, (int, float)):
        return np.full(len(names), float(value))
    if len(value) != len(names):
        raise SpecError(f"data.keypoint_sigmas has {len(value)} values but the data has {len(names)} keypoints "
                        f"({', '.join(names)}); give one per keypoint, in that order, or a single value")
    return np.asarray(value, np.float64)


def crop_size(spec: KeypointsSpec) -> tuple[int, int]:
    return spec.data.image_width, spec.data.image_height


class KeypointCrops(Dataset):
    """KpItems -> (crop, heatmaps, weights, inverse matrix, index), or (crop, inverse, index) without targets;
    (None, skipped_entry) for an image that fails to decode."""

    def __init__(self, items: list[KpItem], input_size: tuple[int, int], mean, std, *, padding: float,
                 max_pixels: int, stride: int | None = None, sigma: float = 2.0, augment=None, pairs=(),
                 color_jitter: float = 0.0, seed: int = 0, cache: ImageCache | None = None):
        self.items, self.input_size, self.padding, self.max_pixels = items, tuple(input_size), padding, max_pixels
        self.stride, self.sigma, self.augment, self.pairs, self.color_jitter = stride, sigma, augment, pairs, color_jitter
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.rng = np.random.default_rng(seed)
        self._worker_seed: int | None = None
        self.cache = cache

    def __len__(self) -> int:
        return len(self.items)

    def _seed_worker(self) -> None:
        info = get_worker_info()
        if info is not None and self._worker_seed != info.seed:
            self.rng = np.random.default_rng(info.seed)
            self._worker_seed = info.seed

    def __getitem__(self, i: int):
        item = self.items[i]
        self._seed_worker()
        try:
            pixels = np.asarray(read_image(item.image, self.max_pixels, self.cache))
        except ImageError as e:
            return None, skipped_entry(item.image, e)
        width, height = self.input_size
        kps = item.keypoints.astype(np.float32).copy()
        if self.augment is None:
            centre, scale = box_to_center_scale(item.bbox, width / height, self.padding)
            rotation = 0.0
        else:
            centre, scale, rotation, flipped = self.augment(self.rng, pixels, item.bbox, kps)
            if flipped:  # the augmentation's centre is already in the mirrored image's coordinates
                kps = flip_keypoints(kps, pixels.shape[1], self.pairs)
                pixels = pixels[:, ::-1]
        matrix = crop_matrix(centre, scale, rotation, (width, height))
        crop = np.asarray(warp_image(pixels, matrix, (width, height)), dtype=np.float32)
        inverse = torch.as_tensor(invert_matrix(matrix), dtype=torch.float32)
        if self.color_jitter and self.augment is not None:
            gain = 1 + self.rng.uniform(-self.color_jitter, self.color_jitter)
            bias = 255 * self.rng.uniform(-self.color_jitter, self.color_jitter) / 2
            crop = np.clip(crop * gain + bias, 0, 255)
        kps[:, :2] = transform_points(kps[:, :2], matrix)
        image = (torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1) / 255.0 - self.mean) / self.std
        if self.stride is None:
            return image, inverse, i
        heatmaps, weights = encode_heatmaps(kps, (width, height), (width // self.stride, height // self.stride),
                                            self.sigma)
        return image, torch.as_tensor(heatmaps, dtype=torch.float32), torch.as_tensor(weights, dtype=torch.float32), \
            inverse, i


class KeypointData(VisionData):
    """The keypoint DataModule; see the module docstring. With `meta` the keypoint names follow the model's."""

    item_kind = "images"

    def __init__(self, spec: KeypointsSpec, mean, std, meta: ModelMeta | None = None, *, need_train: bool = True):
        d = spec.data
        super().__init__(batch_size=spec.train.batch_size, eval_batch_size=spec.evaluation.batch_size,
                         num_workers=spec.train.num_workers, max_pixels=d.max_image_pixels,
                         cache=d.cache, cache_dir=d.cache_dir, channels_last=spec.train.channels_last,
                         spec_keys={"train": "data.train_images", "val": "data.val_images"})
        self.spec, self.mean, self.std = spec, list(mean), list(std)
        self.sets: dict[str, KeypointSet] = {}
        self.folders: dict[str, Path] = {}
        # Training reads both splits; with a model (evaluate, export) the training split only when given, for
        # INT8 calibration crops.
        read_train = need_train if meta is None else bool(d.train_labels)
        for split in ("train", "val") if read_train else ("val",):
            labels, images = getattr(d, f"{split}_labels"), getattr(d, f"{split}_images")
            if labels is None:
                raise SpecError(f"data.{split}_labels is not set; give the COCO keypoints JSON of the {split} objects")
            folder = require_path(f"data.{split}_images", images, "dir")
            self.folders[split] = folder
            self.sets[split] = read_coco_keypoints(require_path(f"data.{split}_labels", labels, "file"), folder,
                                                   category=d.category)
        first = self.sets.get("train") or self.sets["val"]
        self.names: list[str] = list(meta.arch["names"]) if meta is not None else list(first.names)
        self.skeleton = [tuple(p) for p in (meta.arch["skeleton"] if meta is not None else first.skeleton)]
        self.category_id = int(meta.arch["category_id"]) if meta is not None else first.category_id
        self.category_name = str(meta.arch.get("category_name", "")) if meta is not None else first.category_name
        for split, kset in self.sets.items():
            if [n.lower() for n in kset.names] != [n.lower() for n in self.names]:
                whose = "the model's" if meta is not None else "the training set's"
                raise DataError(f"data.{split}_labels: keypoints {kset.names} differ from {whose} {self.names}; "
                                "both must list the same keypoints in the same order")
        self.pairs = flip_pairs(self.names, [list(p) for p in d.flip_pairs] if d.flip_pairs else None)
        self.sigmas = resolve_sigmas(d.keypoint_sigmas, self.names)
        self.unused: dict[str, int] = {}
        self.train_items = self._items("train") if "train" in self.sets else []
        self.val_items = self._items("val")
        for split, kset in self.sets.items():
            if kset.skipped:
                log.warning("data.%s_labels: %d annotation(s) left out, e.g. %s (listed under data_problems)",
                            split, len(kset.skipped), kset.skipped[0])
        if "train" in self.sets and not self.train_items:
            raise DataError("data.train_labels holds no usable object (non-crowd, with a labelled keypoint); see "
                            "data_problems")
        if not self.val_items:
            raise DataError("data.val_labels holds no usable object (non-crowd, with a labelled keypoint)")

    def split_counts(self) -> dict[str, int]:
        """metrics.json's sizes of each split: images, and the objects (one training crop each) in them."""
        counts = {}
        for split, items in (("train", self.train_items), ("val", self.val_items)):
            counts[f"{split}_images"] = len({it.image_id for it in items})
            counts[f"{split}_objects"] = len(items)
        return counts

    def _items(self, split: str) -> list[KpItem]:
        kset, folder = self.sets[split], self.folders[split]
        files = {im.id: folder / im.file for im in kset.images}
        items, unused = [], 0
        for obj in kset.objects:
            if obj.iscrowd or not (obj.keypoints[:, 2] > 0).any():
                unused += 1
                continue
            items.append(KpItem(files[obj.image_id], obj.image_id, obj.ann_id, tuple(obj.bbox),
                                np.asarray(obj.keypoints, np.float32)))
        self.unused[split] = unused
        return items

    # -- what the task reads ------------------------------------------------------------------
    @property
    def problems(self) -> dict[str, dict]:
        """Per split: annotation rows refused (file: annotation id: reason) and objects not used for training."""
        return {split: {"count": len(kset.skipped), "rows": list(kset.skipped),
                        "objects_without_keypoints_or_crowd": self.unused.get(split, 0)}
                for split, kset in self.sets.items()}

    def ground_truth(self, items: list[KpItem] | None = None, split: str = "val") -> dict:
        """COCO keypoints dict of the images `items` come from (all their objects, crowd ones too) for COCOeval."""
        kset = self.sets[split]
        items = self.val_items if items is None else items
        used = {it.image_id for it in items}
        images = [{"id": im.id, "file_name": im.file, "width": im.width, "height": im.height}
                  for im in kset.images if im.id in used]
        annotations = []
        for obj in kset.objects:
            if obj.image_id not in used:
                continue
            kps = np.asarray(obj.keypoints, np.float64)
            annotations.append({"id": obj.ann_id, "image_id": obj.image_id, "category_id": self.category_id,
                                "bbox": [float(v) for v in obj.bbox], "area": float(obj.area),
                                "iscrowd": int(obj.iscrowd), "keypoints": kps.flatten().tolist(),
                                "num_keypoints": int((kps[:, 2] > 0).sum())})
        return {"images": images, "annotations": annotations,
                "categories": [{"id": self.category_id, "name": self.category_name, "keypoints": list(self.names),
                                "skeleton": [[a + 1, b + 1] for a, b in self.skeleton]}]}

    # -- TaskData hooks -----------------------------------------------------------------------
    def image_path(self, item: KpItem) -> Path:
        return item.image

    def find_unusable(self, items: list) -> dict[str, str]:
        images = sorted({str(it.image) for it in items})  # several objects share an image: each decoded once
        if self.image_cache is not None:
            return self.image_cache.fill(images, self.item_kind)
        return undecodable(images, self.max_pixels)

    def make_dataset(self, items: list, train: bool) -> Dataset:
        return self.crops(items, train, targets=True)

    def crops(self, items: list[KpItem], train: bool, targets: bool, stride: int = 4) -> KeypointCrops:
        d = self.spec.data
        augment = None
        if train:
            a = d.augmentation
            augment = KeypointAugment(scale_range=tuple(a.scale), rotation_deg=a.rotation, flip_prob=a.horizontal_flip,
                                      half_body_prob=a.half_body, pairs=tuple(self.pairs),
                                      upper_body_ids=tuple(upper_body_ids(self.names)),
                                      aspect=d.image_width / d.image_height, padding=d.box_padding)
        return KeypointCrops(items, crop_size(self.spec), self.mean, self.std, padding=d.box_padding,
                             max_pixels=self.max_pixels, stride=self.heatmap_stride if targets else None,
                             sigma=d.heatmap_sigma, augment=augment, pairs=self.pairs,
                             color_jitter=d.augmentation.color_jitter if train else 0.0, seed=self.spec.train.seed,
                             cache=self.image_cache)

    heatmap_stride: int = 4  # set by the task from the network it trains

    def collate_fn(self, train: bool) -> Callable[[list], tuple]:
        return collate_skipping

    def model_inputs(self, batch: tuple) -> torch.Tensor:
        return batch[0]
