"""The training DataLoader: shuffled batches that a checkpoint taken mid-epoch resumes exactly.

A run stopped in the middle of an epoch (SIGTERM on preemption, Ctrl-C) saves a checkpoint after
its last finished batch. Lightning restores the model, the optimiser and the batch counter, and
asks the loader for the rest of the epoch; torch's own shuffled loader would start a new, different
order, so the resumed epoch would see some items twice and others not at all. This loader:

- draws each epoch's order from one seed (taken from torch's global generator, as torch's
  RandomSampler does) and keeps that seed and the number of batches trained in its `state_dict`,
  which Lightning stores in every checkpoint; a resumed epoch replays the same order from the first
  batch not yet trained, without loading the ones before it;
- builds (augments) batch j of an epoch with the global random generators (torch, numpy, Python)
  seeded from the epoch's seed and j, then puts the generators back as they were (likewise when
  it starts the epoch's iterator, where torch draws the base seed of DataLoader workers). The model's own
  draws (dropout) therefore never depend on how far ahead batches were fetched (Lightning prefetches
  one), and batch j gets the same augmentation however the epoch was split between runs. Transforms
  that keep a generator of their own (detection's) are not covered. With DataLoader workers the
  items are augmented in the workers, whose generators are their own: the resumed epoch still gets
  the right items, not the same augmentation.

The trainer reports each trained batch with `mark_trained`: only it knows which fetched batches were
trained on. Under DDP Lightning gives every rank a DistributedSampler instead, so `build_loader`
uses this loader only in a single-process run.
"""
from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochShuffle(Sampler[int]):
    """Every epoch a fresh permutation from a seed drawn at `new_epoch()`; `resume(seed, skip)` makes the next
    epoch replay the permutation of `seed` from position `skip` instead."""

    def __init__(self, size: int):
        self.size = size
        self.seed: int | None = None
        self.skip = 0
        self._resume: tuple[int, int] | None = None

    def new_epoch(self) -> None:
        if self._resume is not None:
            (self.seed, self.skip), self._resume = self._resume, None
        else:
            self.seed, self.skip = int(torch.empty((), dtype=torch.int64).random_().item()), 0

    def resume(self, seed: int, skip: int) -> None:
        self._resume = (int(seed), int(skip))

    def __iter__(self) -> Iterator[int]:
        if self.seed is None:  # iterated without new_epoch(), e.g. by a wrapping sampler
            self.new_epoch()
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        return iter(torch.randperm(self.size, generator=generator)[self.skip:].tolist())

    def __len__(self) -> int:
        return self.size


@contextlib.contextmanager
def _generators_seeded(seed: int, index: int) -> Iterator[None]:
    """Inside: torch's CPU generator, numpy's and Python's seeded from (seed, index); afterwards as before."""
    state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    batch_seed = int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0])
    torch.default_generator.manual_seed(batch_seed)  # not torch.manual_seed: that reseeds CUDA's too
    np.random.seed(batch_seed % 2**32)
    random.seed(batch_seed)
    try:
        yield
    finally:
        torch.set_rng_state(state[0])
        np.random.set_state(state[1])
        random.setstate(state[2])


class ResumableLoader(DataLoader):
    """A shuffled training DataLoader whose `state_dict` lets Lightning resume it mid-epoch (module docstring)."""

    def __init__(self, dataset: Dataset, batch_size: int, sampler: EpochShuffle | None = None, **kwargs: Any):
        # `sampler`: the epoch order; an EpochShuffle subclass may order the seed's permutation otherwise (text
        # groups similar lengths into batches)
        super().__init__(dataset, batch_size=batch_size, sampler=sampler or EpochShuffle(len(dataset)), **kwargs)
        self.batches_done = 0

    def mark_trained(self, batches: int) -> None:
        """`batches` of this epoch's batches have been trained on (what a checkpoint taken now has seen)."""
        self.batches_done = batches

    def __iter__(self) -> Iterator[Any]:
        order: EpochShuffle = self.sampler
        order.new_epoch()
        first = order.skip // self.batch_size
        self.batches_done = first
        with _generators_seeded(order.seed, 0):  # torch draws the workers' base seed here, even with no workers
            batches = super().__iter__()
        return self._seeded_batches(batches, order.seed, first)

    @staticmethod
    def _seeded_batches(batches: Iterator[Any], seed: int, first: int) -> Iterator[Any]:
        index = first
        while True:
            with _generators_seeded(seed, index + 1):
                try:
                    batch = next(batches)
                except StopIteration:
                    return
            yield batch
            index += 1

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.sampler.seed, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        done = int(state.get("batches_done") or 0)
        if state.get("seed") is not None and 0 < done < len(self):  # a finished epoch resumes with a new one
            self.sampler.resume(state["seed"], done * self.batch_size)
