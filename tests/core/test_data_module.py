"""TaskData, the DataModule base of every task, on a tiny non-image dataset: lines of text.

A line starting with "bad" is what a scan finds unusable (like an image that does not decode); a
line containing "~" passes the scan but fails when its Dataset loads it (like a file that changed
after the scan). The model's input is the line's length.
"""
from __future__ import annotations

import logging

import pytest
import torch

from transferkit.data.items import skipped_entry, usable_batches
from transferkit.data.module import TaskData, split_validation
from transferkit.data.resumable import EpochShuffle
from transferkit.errors import DataError


class Lines(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        text, label = self.items[i]
        if "~" in text:
            return None, skipped_entry(text, "changed since the scan")
        return torch.tensor([float(len(text))]), label


class LineData(TaskData):
    item_kind = "sentences"

    def __init__(self, train, val, batch_size=4):
        super().__init__(batch_size=batch_size, eval_batch_size=3,
                         spec_keys={"train": "data.train_file", "val": "data.val_file"})
        self.train_items, self.val_items = list(train), list(val)
        self.scans: list[list[str]] = []

    def make_dataset(self, items, train):
        return Lines(items)

    def where(self, item):
        return item[0]

    def find_unusable(self, items):
        self.scans.append([text for text, _ in items])
        return {text: "not a sentence" for text, _ in items if text.startswith("bad")}


def lines(n: int, prefix: str = "line") -> list[tuple[str, int]]:
    return [(f"{prefix} {'x' * i}", i % 2) for i in range(n)]


def test_each_split_is_scanned_once_and_only_when_it_is_used():
    data = LineData(lines(6) + [("bad train", 0)], lines(3, "val") + [("bad val", 1)])
    assert data.scans == [] and len(data.train_items) == 7  # constructing the module decodes nothing

    data.val_dataloader()
    data.val_dataloader()
    assert data.scans == [[t for t, _ in lines(3, "val")] + ["bad val"]]
    assert len(data.train_items) == 7  # train untouched until it is used

    data.train_dataloader()
    data.train_dataloader()
    list(data.calibration_batches(4))
    assert len(data.scans) == 2 and "bad train" in data.scans[1]


def test_unusable_items_are_dropped_counted_and_named_with_the_spec_key(caplog):
    data = LineData(lines(6) + [("bad one", 0), ("bad two", 1)], lines(3, "val"))
    with caplog.at_level(logging.WARNING, logger="transferkit"):
        data.train_dataloader()
    assert data.skipped == {"bad one": "not a sentence", "bad two": "not a sentence"}
    assert len(data.train_items) == 6 and all(not t.startswith("bad") for t, _ in data.train_items)
    summary = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(summary) == 1
    assert "data.train_file" in summary[0] and "skipped 2 sentences" in summary[0]
    assert "skipped_sentences" in summary[0]


def test_a_split_with_no_usable_item_left_names_its_key():
    data = LineData([("bad a", 0), ("bad b", 1)], lines(2))
    with pytest.raises(DataError, match="data.train_file has no usable sentences"):
        data.train_dataloader()


def test_items_that_fail_when_loaded_leave_their_batch_and_are_named():
    data = LineData(lines(2), [("val a", 0), ("val ~b", 1), ("val c", 0), ("~d", 1)])
    kept = list(usable_batches(data.val_dataloader(), data.skipped))
    assert [len(labels) for _, labels in kept] == [2]  # the second batch held only "~d"
    assert data.skipped == {"val ~b": "changed since the scan", "~d": "changed since the scan"}


def test_calibration_yields_model_inputs_of_at_most_count_training_items():
    data = LineData(lines(10), lines(5, "val"))
    batches = list(data.calibration_batches(7, batch_size=3))
    assert [b.shape for b in batches] == [(3, 1), (3, 1), (1, 1)]  # inputs only, no labels or skipped entries
    expected = torch.tensor([[float(len(t))] for t, _ in lines(10)[:7]])
    assert torch.equal(torch.cat(batches), expected)  # evaluation order: not shuffled


def test_calibration_falls_back_to_val_and_skips_unusable_items():
    data = LineData([], [("v ~bad", 0), ("val", 1), ("bad scan", 0), ("value", 1)])
    batches = list(data.calibration_batches(8, batch_size=8))
    assert torch.equal(torch.cat(batches), torch.tensor([[3.0], [5.0]]))
    assert set(data.skipped) == {"v ~bad", "bad scan"}


def test_training_drops_the_last_partial_batch_only_when_there_is_more_than_one_batch():
    many = LineData(lines(10), lines(10, "val"), batch_size=4)
    train, val = many.train_dataloader(), many.val_dataloader()
    assert train.drop_last and len(train) == 2
    assert not val.drop_last and len(val) == 4  # 10 val items in batches of 3: the last one is kept
    assert isinstance(train.sampler, EpochShuffle)  # shuffled, and resumable mid-epoch (test_resumable_loader.py)
    assert isinstance(val.sampler, torch.utils.data.SequentialSampler)

    few = LineData(lines(3), lines(1), batch_size=4)
    assert not few.train_dataloader().drop_last and len(few.train_dataloader()) == 1
    exact = LineData(lines(4), lines(1), batch_size=4)
    assert not exact.train_dataloader().drop_last  # one full batch: nothing to drop


def test_split_validation_is_reproducible_and_stratified():
    items = [(f"a{i}", "a") for i in range(10)] + [(f"b{i}", "b") for i in range(4)] + [("c0", "c")]

    def group(item):
        return item[1]

    train, val = split_validation(items, 0.2, seed=3, key=group)
    assert (train, val) == split_validation(items, 0.2, seed=3, key=group)
    assert sorted(train + val) == sorted(items)
    assert sorted(g for _, g in val) == ["a", "a", "b"]  # 20% of 10, at least one of 4, none of a single item
    assert ("c0", "c") in train
    assert any(split_validation(items, 0.2, seed=s, key=group)[1] != val for s in range(4, 10))
    assert TaskData.split_validation(items, 0.2, 3, key=group) == (train, val)  # the same function on the base
