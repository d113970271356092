"""Training batches of similar lengths (sentences, utterances), so little compute goes into padding: one epoch's
order (bucket_batches), resumable mid-epoch in a single process (LengthBuckets, with data.resumable's loader) and
sharded under DDP (LengthBucketSampler); bucketed_loader picks the one that applies."""
from __future__ import annotations

import random
from typing import Any, Iterator, Sequence

import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .resumable import EpochShuffle, ResumableLoader


def bucket_batches(lengths: Sequence[int], batch_size: int, rng: random.Random, pool_batches: int = 32
                   ) -> list[list[int]]:
    """One epoch's batches of similar-length examples: the examples shuffled by `rng`, cut into pools of
    `pool_batches` batches, each pool sorted by length and cut into batches, the full batches shuffled; a last
    partial batch goes last, and only when there is no full batch is it kept."""
    n = len(lengths)
    order = list(range(n))
    rng.shuffle(order)
    full, partial = [], []
    pool = batch_size * pool_batches
    for start in range(0, n, pool):
        chunk = sorted(order[start:start + pool], key=lengths.__getitem__)
        for b in range(0, len(chunk), batch_size):
            (full if len(chunk[b:b + batch_size]) == batch_size else partial).append(chunk[b:b + batch_size])
    rng.shuffle(full)
    return full or partial


class LengthBuckets(EpochShuffle):
    """The resumable training order of a single process (data.resumable): every run of `batch_size` indices is a
    batch of similar lengths (bucket_batches), from the epoch's seed, which ResumableLoader draws from torch's
    generator (seeded by train.seed) and keeps in checkpoints; a resumed epoch replays it from the first batch
    not yet trained."""

    def __init__(self, lengths: Sequence[int], batch_size: int, pool_batches: int = 32):
        super().__init__(len(lengths))
        self.lengths, self.batch_size, self.pool_batches = [int(n) for n in lengths], int(batch_size), pool_batches

    def order(self, seed: int) -> list[int]:
        return [i for batch in bucket_batches(self.lengths, self.batch_size, random.Random(seed), self.pool_batches)
                for i in batch]

    def __iter__(self) -> Iterator[int]:
        if self.seed is None:
            self.new_epoch()
        return iter(self.order(self.seed)[self.skip:])

    def __len__(self) -> int:
        n, size = len(self.lengths), self.batch_size
        return n if n <= size else n // size * size


class LengthBucketSampler(DistributedSampler):
    """The bucketed training order under DDP: every process takes every world_size-th batch of the same
    bucket_batches order (from train.seed and the epoch), all processes the same number of batches.

    It is a DistributedSampler so that Lightning leaves it in place (it would otherwise shard and reshuffle the
    indices, losing the buckets); DistributedSampler.__init__ is not called: it needs the process group, and the
    world size is read when iterating instead."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, pool_batches: int = 32):
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

    @property
    def num_replicas(self) -> int:  # what DistributedSampler's readers look up
        return self._world()[0]

    @property
    def rank(self) -> int:
        return self._world()[1]

    def batches(self) -> list[list[int]]:
        """This process's batches of this epoch, in order."""
        every = bucket_batches(self.lengths, self.batch_size, random.Random(f"{self.seed}:{self.epoch}"),
                               self.pool_batches)
        world, rank = self._world()
        if not every:
            return []
        count = max(1, len(every) // world)
        return [every[(rank + k * world) % len(every)] for k in range(count)]

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            yield from batch

    def __len__(self) -> int:
        return sum(len(b) for b in self.batches())


def bucketed_loader(dataset: Dataset, lengths: Sequence[int], batch_size: int, seed: int, **settings: Any
                    ) -> DataLoader:
    """A training loader whose batches hold items of similar `lengths`: resumable mid-epoch in a single process (as
    the core's loaders are), sharded by LengthBucketSampler (seeded by `seed`) under DDP."""
    if LengthBucketSampler._world()[0] > 1:
        return DataLoader(dataset, batch_size=batch_size, sampler=LengthBucketSampler(lengths, batch_size, seed),
                          **settings)
    return ResumableLoader(dataset, batch_size, sampler=LengthBuckets(lengths, batch_size), **settings)
