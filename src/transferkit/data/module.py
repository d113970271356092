"""TaskData: the one LightningDataModule base every task's data extends, whatever an item is.

It owns the bookkeeping every task shares: the train and val items, what was skipped and why,
the warnings for the run's summary, when items are checked, how DataLoaders are built, the
calibration batches export needs, and a reproducible validation hold-out. A subclass says what an
item is (`make_dataset`, `collate_fn`, `find_unusable`, `where`, `model_inputs`); the vision layer
(`vision.datasets.VisionData`) is one such subclass, a text or audio layer would be another.

Scan policy: each split is checked ONCE, lazily, just before its first DataLoader or calibration
batch: `find_unusable(items)` names the items that cannot be used ({where: reason}); they are
dropped, kept in `skipped` and summarised in the log under the spec key the split came from. A
verb that never touches a split (evaluate never trains) never pays for checking it.
"""
from __future__ import annotations

import logging
import random
from typing import Any, Callable, Hashable, Iterator, Sequence, TypeVar

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from .items import collate_skipping, usable_batches
from .resumable import ResumableLoader

log = logging.getLogger("transferkit")

Item = TypeVar("Item")
SPLITS = ("train", "val")


def build_loader(dataset: Dataset, batch_size: int, *, train: bool, collate_fn: Callable, num_workers: int = 0
                 ) -> DataLoader:
    """The DataLoader every task uses: shuffled training batches, the last partial one dropped only when
    there is more than one batch (a tiny dataset still trains), worker processes kept between epochs,
    pinned memory when batches go to a GPU. Training batches come from a ResumableLoader (a checkpoint taken
    mid-epoch resumes the same epoch exactly) except under DDP, where Lightning shards them per rank."""
    settings = dict(num_workers=num_workers, collate_fn=collate_fn, drop_last=train and len(dataset) > batch_size,
                    persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available())
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if train and not (distributed and torch.distributed.get_world_size() > 1):
        return ResumableLoader(dataset, batch_size, **settings)
    return DataLoader(dataset, batch_size=batch_size, shuffle=train, **settings)


def split_validation(items: Sequence[Item], fraction: float, seed: int, key: Callable[[Item], Hashable] = lambda _: 0
                     ) -> tuple[list[Item], list[Item]]:
    """(train, val): `fraction` of each group (`key(item)`, e.g. the class) held out as val, reproducibly.

    A group of two or more items gives val at least one, a group of one gives none. Groups are visited
    in sorted key order with one `random.Random(seed)`, so the same items and seed give the same split."""
    groups: dict[Hashable, list[Item]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    rng = random.Random(seed)
    train: list[Item] = []
    val: list[Item] = []
    for group in sorted(groups):
        members = list(groups[group])
        rng.shuffle(members)
        n_val = max(1, round(len(members) * fraction)) if len(members) > 1 else 0
        val.extend(members[:n_val])
        train.extend(members[n_val:])
    return train, val


class TaskData(pl.LightningDataModule):
    """Train/val items, what was skipped, and the loaders built from a subclass's Dataset and collate.

    Collated batches put the skipped_entry strings of their unusable items last (data/items.py);
    `model_inputs(batch)` picks the model's inputs out of a batch. Subclasses set `train_items` and
    `val_items` in their constructor and name the spec key of each split in `spec_keys` (messages, log)."""

    item_kind: str = "items"  # what one item is, in messages (images, sentences, utterances)

    def __init__(self, *, batch_size: int, eval_batch_size: int, num_workers: int = 0,
                 spec_keys: dict[str, str] | None = None):
        super().__init__()
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.spec_keys = {"train": "data (train)", "val": "data (val)", **(spec_keys or {})}
        self.train_items: list = []
        self.val_items: list = []
        self.skipped: dict[str, str] = {}  # where -> reason, for every item left out so far
        self.warnings: list[str] = []
        self._scanned: set[str] = set()
        self._train_loader: ResumableLoader | None = None
        self._train_loader_state: dict[str, Any] | None = None  # from the checkpoint a run resumes

    # -- what a subclass supplies ---------------------------------------------------------------
    def make_dataset(self, items: list, train: bool) -> Dataset:
        """A Dataset whose samples are the item's fields, or (None, skipped_entry) for an unusable item."""
        raise NotImplementedError

    def collate_fn(self, train: bool) -> Callable[[list], tuple]:
        """The collate function for a split (picklable for worker processes); skipped entries go last."""
        return collate_skipping

    def find_unusable(self, items: list) -> dict[str, str]:
        """{where: reason} for the items that cannot be used (e.g. images that do not decode)."""
        return {}

    def where(self, item: Any) -> str:
        """How an item is named in `skipped` (the keys `find_unusable` returns)."""
        return str(item)

    def model_inputs(self, batch: tuple) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The model's inputs in a collated batch without its skipped entries (vision: the image tensor)."""
        return batch[0]

    def after_scan(self, split: str) -> None:
        """Checks that need the usable items of a split (e.g. no class left empty); raise to stop."""

    # -- shared ---------------------------------------------------------------------------------
    split_validation = staticmethod(split_validation)

    def items(self, split: str) -> list:
        return self.train_items if split == "train" else self.val_items

    def record_skipped(self, key: str, found: dict[str, str], what: str = "that cannot be used") -> None:
        """Keep `found` ({where: reason}) in `skipped` and log one summary line naming the spec key."""
        if not found:
            return
        self.skipped.update(found)
        where, reason = next(iter(found.items()))
        example = reason if reason.startswith(where) else f"{where}: {reason}"
        log.warning("%s: skipped %d %s %s, e.g. %s (each is listed under skipped_%s)", key, len(found),
                    self.item_kind, what, example, self.item_kind)

    def scan(self, split: str) -> None:
        """Check a split's items once (see the module docstring); later calls do nothing."""
        if split in self._scanned:
            return
        self._scanned.add(split)
        items = self.items(split)
        bad = self.find_unusable(items) if items else {}
        if bad:
            kept = [it for it in items if self.where(it) not in bad]
            if split == "train":
                self.train_items = kept
            else:
                self.val_items = kept
            self.record_skipped(self.spec_keys[split], bad)
        self.after_scan(split)

    def loader(self, items: list, train: bool, batch_size: int) -> DataLoader:
        return build_loader(self.make_dataset(items, train), batch_size, train=train,
                            collate_fn=self.collate_fn(train), num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        self.scan("train")
        if not self.train_items:
            raise DataError(f"{self.spec_keys['train']} has no usable {self.item_kind} to train on; add some or fix "
                            f"the ones listed under skipped_{self.item_kind}")
        loader = self.loader(self.train_items, True, self.batch_size)
        if isinstance(loader, ResumableLoader):
            if self._train_loader_state:
                loader.load_state_dict(self._train_loader_state)
            self._train_loader = loader
        return loader

    # Where the training loader is in its epoch travels in every checkpoint through these two Lightning hooks:
    # Lightning restores a DataModule before anything builds a loader (a loop's own loader state comes too late
    # when the schedule asks trainer.estimated_stepping_batches, which builds the loader first).
    def state_dict(self) -> dict[str, Any]:
        loader = getattr(self, "_train_loader", None)
        return {"train_loader": loader.state_dict()} if loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._train_loader_state = state_dict.get("train_loader")

    def val_dataloader(self) -> DataLoader:
        self.scan("val")
        if not self.val_items:
            raise DataError(f"{self.spec_keys['val']} has no usable {self.item_kind} to validate on; add some or fix "
                            f"the ones listed under skipped_{self.item_kind}")
        return self.loader(self.val_items, False, self.eval_batch_size)

    def calibration_batches(self, count: int, batch_size: int = 16) -> Iterator[Any]:
        """The model inputs of up to `count` training items (val when there are none), preprocessed as for
        evaluation: INT8 calibration and export's parity probe."""
        split = "train"
        self.scan(split)
        if not self.train_items:
            split = "val"
            self.scan(split)
        items = self.items(split)[:count]
        if not items:
            return
        for batch in usable_batches(self.loader(items, False, batch_size), self.skipped):
            yield self.model_inputs(batch)
