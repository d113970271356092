"""The training loader (data/resumable.py): every item once per epoch in a fresh shuffled order, random
augmentation that does not touch the global random stream, and a state that resumes an epoch mid-way
with exactly the batches the interrupted epoch had not reached."""
from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import Dataset

from transferkit.data.resumable import ResumableLoader


class Noisy(Dataset):
    """Item i -> (i, a draw from each global generator): augmentation stand-in."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int):
        return torch.tensor([float(i), torch.rand(()).item(), float(np.random.rand()), random.random()])


def epoch(loader: ResumableLoader) -> list[torch.Tensor]:
    return list(loader)


def test_each_epoch_serves_every_item_once_in_a_new_order():
    torch.manual_seed(0)
    loader = ResumableLoader(Noisy(), 3, drop_last=True)
    first, second = epoch(loader), epoch(loader)
    assert len(first) == len(loader) == 3  # 10 items, batches of 3, the partial one dropped
    ids = [torch.cat(batches)[:, 0].tolist() for batches in (first, second)]
    assert all(len(set(i)) == 9 for i in ids) and ids[0] != ids[1]


def test_fetching_batches_leaves_the_global_random_stream_alone():
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    loader = ResumableLoader(Noisy(), 3)
    iterator = iter(loader)  # the epoch's seed is the one draw from the global stream
    after_start = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    list(iterator)
    assert torch.equal(torch.get_rng_state(), after_start[0])
    assert np.array_equal(np.random.get_state()[1], after_start[1]) and random.getstate() == after_start[2]


def test_a_loader_restored_mid_epoch_serves_exactly_the_batches_not_yet_trained():
    torch.manual_seed(1)
    loader = ResumableLoader(Noisy(), 2)
    whole = epoch(loader)  # the uninterrupted epoch: 5 batches
    torch.manual_seed(1)
    interrupted = ResumableLoader(Noisy(), 2)
    seen = []
    for i, batch in enumerate(interrupted):
        seen.append(batch)
        interrupted.mark_trained(i + 1)  # what the trainer reports after each batch
        if i == 1:
            break
    state = interrupted.state_dict()
    assert state["batches_done"] == 2

    torch.manual_seed(123)  # a new process: whatever its generators hold
    resumed = ResumableLoader(Noisy(), 2)
    resumed.load_state_dict(state)
    rest = epoch(resumed)
    assert len(rest) == 3
    for got, want in zip(seen + rest, whole):  # same items, same augmentation draws
        assert torch.equal(got, want)
    assert epoch(resumed)[0].shape == whole[0].shape  # and the next epoch is a whole one again
    assert len(epoch(resumed)) == 5


def test_a_state_saved_at_the_end_of_an_epoch_starts_a_new_epoch():
    loader = ResumableLoader(Noisy(), 5)
    epoch(loader)
    loader.mark_trained(2)
    state = loader.state_dict()
    fresh = ResumableLoader(Noisy(), 5)
    fresh.load_state_dict(state)
    assert len(epoch(fresh)) == 2
