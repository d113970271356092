"""Text batches: padded to their own longest sentence (dynamic padding), and training batches drawn from sentences
of similar length (length bucketing), in an order fixed by train.seed."""
from __future__ import annotations

import statistics

import pytest
import torch

from transferkit.data.items import skipped_entry
from transferkit.spec import load_spec
from transferkit.tasks.text_classification.data import TextClassificationData
from transferkit.tasks.text_classification.spec import TextClassificationSpec
from transferkit.data.buckets import LengthBucketSampler, LengthBuckets
from transferkit.text.data import IGNORE_INDEX, TextCollate, TextExample
from transferkit.text.tokenizer import TextTokenizer


def example(n: int, target=0) -> TextExample:
    return TextExample(f"f:{n}", tuple(range(100, 100 + n)), target)


def test_batches_are_padded_to_their_longest_example():
    ids, mask, targets, bad = TextCollate(pad_id=0, target_kind="class")([example(3, 1), example(5, 0), example(2, 2)])
    assert ids.dtype == mask.dtype == torch.int64 and ids.shape == mask.shape == (3, 5)
    assert mask.sum(1).tolist() == [3, 5, 2]
    assert ids[0, 3:].tolist() == [0, 0] and ids[1].tolist() == [100, 101, 102, 103, 104]
    assert targets.tolist() == [1, 0, 2] and bad == []


def test_multi_hot_and_token_targets_and_skipped_entries():
    collate = TextCollate(pad_id=7, target_kind="multi_hot", num_labels=3)
    _, _, targets, bad = collate([example(2, (1.0, 0.0, 1.0)), (None, skipped_entry("f:9", "broken"))])
    assert targets.dtype == torch.float32 and targets.tolist() == [[1.0, 0.0, 1.0]] and bad == ["f:9\tbroken"]
    ids, _, targets, _ = TextCollate(7, "tokens")([example(4, (IGNORE_INDEX, 2, 1, IGNORE_INDEX)), example(2, (-100, 0))])
    assert ids[1, 2:].tolist() == [7, 7]
    assert targets.tolist() == [[IGNORE_INDEX, 2, 1, IGNORE_INDEX], [IGNORE_INDEX, 0, IGNORE_INDEX, IGNORE_INDEX]]
    assert TextCollate(0, "class")([(None, "f:1\tx")])[:3] == (None, None, None)


def batches_of(order: list[int], size: int) -> list[list[int]]:
    return [order[i:i + size] for i in range(0, len(order), size)]


def test_bucketed_batches_hold_similar_lengths_and_cover_every_example_once():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 60, (203,), generator=gen).tolist()
    sampler = LengthBuckets(lengths, batch_size=8)
    batches = batches_of(sampler.order(seed=5), 8)
    assert all(len(b) == 8 for b in batches) and len(batches) == 203 // 8 == len(sampler) // 8  # partial dropped
    assert len(set(sum(batches, []))) == len(sum(batches, []))
    spread = statistics.mean(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    shuffled = torch.randperm(203, generator=gen).tolist()
    random_spread = statistics.mean(max(lengths[i] for i in shuffled[k:k + 8]) - min(lengths[i] for i in shuffled[k:k + 8])
                                    for k in range(0, 200, 8))
    assert spread < random_spread / 4
    firsts = [lengths[b[0]] for b in batches]  # the batches come in a shuffled order, not sorted by length
    assert firsts != sorted(firsts)


def test_bucketing_is_reproducible_by_seed_and_changes_per_epoch():
    lengths = [(i * 37) % 50 + 1 for i in range(100)]
    buckets = LengthBuckets(lengths, 10)
    assert buckets.order(1) == buckets.order(1) != buckets.order(2)
    torch.manual_seed(3)  # what train.seed does: the epoch seeds come from torch's generator
    buckets.new_epoch()
    first, first_seed = list(buckets), buckets.seed
    buckets.new_epoch()
    assert list(buckets) != first and sorted(buckets) == sorted(first)
    torch.manual_seed(3)
    buckets.new_epoch()
    assert buckets.seed == first_seed and list(buckets) == first
    ddp = LengthBucketSampler(lengths, 10, seed=1)  # the DDP form: one process here, every batch
    order = list(ddp)
    ddp.set_epoch(1)
    assert order == list(LengthBucketSampler(lengths, 10, seed=1)) and list(ddp) != order
    assert sorted(order) == list(range(100)) and ddp.num_replicas == 1 and ddp.rank == 0


def test_a_dataset_smaller_than_one_batch_keeps_its_partial_batch():
    assert sorted(LengthBuckets([5, 3, 9], batch_size=8).order(0)) == [0, 1, 2]
    assert len(LengthBuckets([5, 3, 9], batch_size=8)) == 3


@pytest.fixture(scope="module")
def tokenizer(minilm_folder) -> TextTokenizer:
    return TextTokenizer((minilm_folder / "tokenizer.json").read_text(), 16)


def test_the_training_loader_buckets_and_truncates_to_max_length(tmp_path, tokenizer):
    words = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
    rows = [f"{' '.join(words.split()[:1 + i % 16])}\t{'ab'[i % 2]}\n" for i in range(64)]
    (tmp_path / "t.tsv").write_text("".join(rows))
    spec = load_spec(TextClassificationSpec, None, [f"data.train_file={tmp_path / 't.tsv'}",
                                                    f"data.val_file={tmp_path / 't.tsv'}", "train.batch_size=8"])
    data = TextClassificationData(spec, tokenizer)
    train = list(data.train_dataloader())
    assert len(train) == 8 and all(ids.shape[1] <= 16 for ids, *_ in train)
    padding = sum(int((mask == 0).sum()) for _, mask, *_ in train)
    val_padding = sum(int((mask == 0).sum()) for _, mask, *_ in data.loader(data.val_items, False, 8))
    assert padding < val_padding / 3  # the unbucketed loader pads much more
    assert isinstance(data.train_dataloader().sampler, LengthBuckets)
    off = TextClassificationData(spec.model_copy(update={"data": spec.data.model_copy(update={"length_bucketing": False})}),
                                 tokenizer)
    assert not isinstance(off.train_dataloader().sampler, LengthBuckets)
    ids, mask = next(iter(data.calibration_batches(4, batch_size=4)))
    assert ids.dtype == torch.int64 and mask.shape == ids.shape and len(ids) == 4


def test_a_bucketed_epoch_resumes_from_its_first_untrained_batch(tmp_path, tokenizer):
    rows = [f"{' '.join(['word'] * (1 + i % 12))} {i}\t{'ab'[i % 2]}\n" for i in range(40)]
    (tmp_path / "t.tsv").write_text("".join(rows))
    spec = load_spec(TextClassificationSpec, None, [f"data.train_file={tmp_path / 't.tsv'}",
                                                    f"data.val_file={tmp_path / 't.tsv'}", "train.batch_size=8"])
    torch.manual_seed(0)
    data = TextClassificationData(spec, tokenizer)
    loader = data.train_dataloader()
    full = [ids.tolist() for ids, *_ in loader]
    torch.manual_seed(0)
    again = TextClassificationData(spec, tokenizer)
    first = again.train_dataloader()
    for n, _ in enumerate(first, 1):
        first.mark_trained(n)
        if n == 2:
            break
    state = again.state_dict()  # what a checkpoint taken after two batches holds
    resumed = TextClassificationData(spec, tokenizer)
    resumed.load_state_dict(state)
    rest = [ids.tolist() for ids, *_ in resumed.train_dataloader()]
    assert len(full) == 5 and rest == full[2:]
