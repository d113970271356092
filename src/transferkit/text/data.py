"""Text data shared by the text tasks: tokenized examples, dynamic padding, length-bucketed training batches,
and reading text files line by line so that one bad line is named (file:line) instead of stopping the run.

An example is tokenized once, when the data is read (a few thousand sentences take well under a second);
batches are padded to their own longest sentence, and training batches are drawn from sentences of similar
length (LengthBucketSampler), so little compute goes into padding.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from ..data.module import TaskData
from ..errors import DataError
from .tokenizer import TextTokenizer

IGNORE_INDEX = -100  # token targets the loss skips (padding, special tokens, a word's later pieces)
TARGET_KINDS = ("class", "multi_hot", "tokens")


@dataclass(frozen=True)
class TextExample:
    """One tokenized input. `target`: a class index ("class"; inference: the input's position), a tuple of 0/1
    per label ("multi_hot"), or one label id per token with IGNORE_INDEX where no label applies ("tokens")."""

    where: str  # file:line, how the example is named in messages and skipped lists
    ids: tuple[int, ...]
    target: Any
    text: str = ""


# -- reading files ----------------------------------------------------------------------------------

def read_lines(path: str | Path, key: str) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, text, None) per line of a UTF-8 file, or (line number, None, why) for a line that is not
    UTF-8: one bad byte costs one line. A BOM and Windows line ends are dropped. A missing file is a DataError
    naming the spec key."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{key}: file {path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{key}: {path} is a folder; give a file") from None
    except OSError as e:
        raise DataError(f"{key}: {path} cannot be read ({type(e).__name__})") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, line in enumerate(lines, 1):
        try:
            yield number, line.decode("utf-8").removesuffix("\r"), None
        except UnicodeDecodeError as e:
            yield number, None, f"not UTF-8 text (byte 0x{line[e.start]:02x} at column {e.start + 1}); save the file as UTF-8"


def decode_surrogates(text: str) -> str | None:
    """Why `text` (decoded with errors='surrogateescape') is not UTF-8, or None when it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"not UTF-8 text (byte 0x{ord(text[e.start]) & 0xff:02x}); save the file as UTF-8"
    return None


# -- batches ----------------------------------------------------------------------------------------

class TextCollate:
    """Examples -> (input_ids [N, L] int64, attention_mask [N, L] int64, targets, skipped entries), padded to the
    batch's longest example. Samples `(None, skipped_entry)` are passed on last, as data/items.py says."""

    def __init__(self, pad_id: int, target_kind: str, num_labels: int = 0):
        if target_kind not in TARGET_KINDS:
            raise ValueError(f"target_kind must be one of {TARGET_KINDS}, got {target_kind!r}")
        self.pad_id, self.target_kind, self.num_labels = int(pad_id), target_kind, int(num_labels)

    def __call__(self, samples: Sequence[TextExample | tuple]) -> tuple:
        good = [s for s in samples if isinstance(s, TextExample)]
        bad = [s[1] for s in samples if not isinstance(s, TextExample)]
        if not good:
            return None, None, None, bad
        length = max(len(e.ids) for e in good)
        ids = torch.full((len(good), length), self.pad_id, dtype=torch.int64)
        mask = torch.zeros((len(good), length), dtype=torch.int64)
        for row, example in enumerate(good):
            ids[row, :len(example.ids)] = torch.tensor(example.ids, dtype=torch.int64)
            mask[row, :len(example.ids)] = 1
        if self.target_kind == "class":
            targets = torch.tensor([int(e.target) for e in good], dtype=torch.int64)
        elif self.target_kind == "multi_hot":
            targets = torch.tensor([list(e.target) for e in good], dtype=torch.float32).reshape(len(good), self.num_labels)
        else:
            targets = torch.full((len(good), length), IGNORE_INDEX, dtype=torch.int64)
            for row, example in enumerate(good):
                targets[row, :len(example.target)] = torch.tensor(example.target, dtype=torch.int64)
        return ids, mask, targets, bad


class LengthBucketSampler(DistributedSampler):
    """Training order in which every run of `batch_size` indices holds examples of similar length.

    Each epoch the examples are shuffled (random.Random of seed and epoch: the same seed gives the same
    order), cut into pools of `pool_batches` batches, each pool sorted by length and cut into batches, and the
    batches shuffled; a last partial batch goes last, so a loader with drop_last drops exactly it (and it is
    dropped here only when the data holds more than one batch, as the core's loaders do).

    It is a DistributedSampler so that Lightning leaves it in place under DDP: each process takes every
    world_size-th batch of the same order, all processes the same number of batches."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, pool_batches: int = 32):
        # DistributedSampler.__init__ is not called: it needs the process group, which DDP starts after the
        # loaders are built; the world size is read when iterating instead.
        self.lengths = [int(n) for n in lengths]
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.pool_batches = int(pool_batches)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @staticmethod
    def _world() -> tuple[int, int]:
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(), dist.get_rank()
        return 1, 0

    def batches(self) -> list[list[int]]:
        """This process's batches of this epoch, in order."""
        n, size = len(self.lengths), self.batch_size
        rng = random.Random(f"{self.seed}:{self.epoch}")
        order = list(range(n))
        rng.shuffle(order)
        full, partial = [], []
        pool = size * self.pool_batches
        for start in range(0, n, pool):
            chunk = sorted(order[start:start + pool], key=self.lengths.__getitem__)
            for b in range(0, len(chunk), size):
                (full if len(chunk[b:b + size]) == size else partial).append(chunk[b:b + size])
        rng.shuffle(full)
        world, rank = self._world()
        if world == 1:
            return full + (partial if n <= size else [])
        every = full or partial
        count = max(1, len(every) // world)
        return [every[(rank + k * world) % len(every)] for k in range(count)]

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            yield from batch

    def __len__(self) -> int:
        return sum(len(b) for b in self.batches())


class TextData(TaskData):
    """TaskData for tokenized text: `train_items` / `val_items` are TextExamples, batches are
    (input_ids, attention_mask, targets), and training batches are length-bucketed when `bucketing`."""

    item_kind = "sentences"

    def __init__(self, *, tokenizer: TextTokenizer, target_kind: str, num_labels: int, batch_size: int,
                 eval_batch_size: int, num_workers: int = 0, seed: int = 0, bucketing: bool = True,
                 spec_keys: dict[str, str] | None = None):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers,
                         spec_keys=spec_keys)
        self.tokenizer = tokenizer
        self.target_kind, self.num_labels = target_kind, num_labels
        self.seed, self.bucketing = seed, bucketing

    def encode(self, rows: Sequence[tuple[str, str, Any]]) -> list[TextExample]:
        """(where, text, target) rows -> TextExamples, tokenized in one batch."""
        encodings = self.tokenizer.encode([text for _, text, _ in rows])
        return [TextExample(where, tuple(e.ids), target, text) for (where, text, target), e in zip(rows, encodings)]

    def make_dataset(self, items: list, train: bool) -> list:
        return items  # a list of TextExamples is a map-style dataset: tokenized already

    def collate_fn(self, train: bool) -> Callable[[list], tuple]:
        return TextCollate(self.tokenizer.pad_id, self.target_kind, self.num_labels)

    def where(self, item: TextExample) -> str:
        return item.where

    def find_unusable(self, items: list) -> dict[str, str]:
        floor = self.tokenizer.special_token_count()
        return {e.where: f"{e.where}: the tokenizer finds no token in {e.text[:40]!r}" for e in items
                if len(e.ids) <= floor}

    def model_inputs(self, batch: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        return batch[0], batch[1]

    def loader(self, items: list, train: bool, batch_size: int) -> DataLoader:
        if not (train and self.bucketing):
            return super().loader(items, train, batch_size)
        sampler = LengthBucketSampler([len(e.ids) for e in items], batch_size, self.seed)
        return DataLoader(self.make_dataset(items, train), batch_size=batch_size, sampler=sampler,
                          drop_last=len(items) > batch_size, collate_fn=self.collate_fn(train),
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=torch.cuda.is_available())
