"""A task that is not about images: classify int64 token-id sequences of any length.

It exists to prove that the shared verbs (train, evaluate, prune, export FP32 + INT8, the ONNX
predictor) work from what a task declares in its ModelMeta alone: one int64 input `tokens`
[batch, length] with a dynamic length axis. Nothing in api.py or optimize/ knows about it.

Data: each sequence is noise tokens (ids >= num_classes) with about a third of its positions set
to the id of its class; a small embedding + 1-D conv network learns that in a few epochs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from transferkit.data.items import collate_skipping, skipped_report, usable_batches
from transferkit.data.module import TaskData
from transferkit.engine.meta import InputSpec, ModelMeta
from transferkit.engine.module import TaskModule
from transferkit.optimize.prune import apply_layer_shapes
from transferkit.spec import ExportConfig, PruneConfig, SpecModel, TrainConfig
from transferkit.tasks.base import Predictor, Task

NAME = "toy_sequence"


class SeqDataConfig(SpecModel):
    num_train: int = Field(192, gt=0, description="training sequences")
    num_val: int = Field(48, gt=0, description="validation sequences")
    vocab_size: int = Field(12, gt=3, description="token ids are in [0, vocab_size)")
    num_classes: int = Field(3, gt=1, description="classes (their ids are the signal tokens)")
    min_length: int = Field(6, gt=1, description="shortest sequence")
    max_length: int = Field(16, gt=1, description="longest sequence")


class SeqModelConfig(SpecModel):
    embed_dim: int = Field(16, gt=0, description="token embedding size")
    channels: int = Field(32, gt=0, description="conv channels")
    pruned: str | None = Field(None, description="retrain a pruned model: path to pruned.ckpt")


class SeqEvaluationConfig(SpecModel):
    batch_size: int = Field(16, gt=0, description="sequences per batch")


class SeqSpec(SpecModel):
    data: SeqDataConfig = Field(default_factory=SeqDataConfig, description="synthetic data")
    model: SeqModelConfig = Field(default_factory=SeqModelConfig, description="network")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(optimizer="adam", learning_rate=0.01, batch_size=16,
                                                                   num_workers=0, histograms=False), description="training")
    evaluation: SeqEvaluationConfig = Field(default_factory=SeqEvaluationConfig, description="evaluate verb")
    prune: PruneConfig = Field(default_factory=PruneConfig, description="prune verb")
    export: ExportConfig = Field(default_factory=ExportConfig, description="export verb")


class SeqNet(nn.Module):
    def __init__(self, vocab_size: int, embed_dim: int, channels: int, num_classes: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.conv1 = nn.Conv1d(embed_dim, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm1d(channels)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm1d(channels)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens).transpose(1, 2)  # [N, E, L]
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(self.pool(x).flatten(1))


def make_items(cfg: SeqDataConfig, count: int, group: int, seed: int) -> list[tuple[torch.Tensor, int]]:
    """`count` (token ids, label) sequences; each run of `group` sequences shares a random length."""
    gen = torch.Generator().manual_seed(seed)
    items: list[tuple[torch.Tensor, int]] = []
    while len(items) < count:
        n = min(group, count - len(items))
        length = int(torch.randint(cfg.min_length, cfg.max_length + 1, (1,), generator=gen))
        labels = torch.randint(0, cfg.num_classes, (n,), generator=gen)
        tokens = torch.randint(cfg.num_classes, cfg.vocab_size, (n, length), generator=gen)
        signal = torch.rand(n, length, generator=gen) < 0.35
        tokens = torch.where(signal, labels[:, None].expand(n, length), tokens)
        items += [(t, int(y)) for t, y in zip(tokens, labels)]
    return items


def collate_shortest(samples: list) -> tuple:
    """Sequences cut to the batch's shortest, so every batch has its own length (the dynamic axis varies)."""
    length = min(len(tokens) for tokens, _ in samples if tokens is not None)
    return collate_skipping([(tokens[:length], label) for tokens, label in samples])


class SeqData(TaskData):
    item_kind = "sequences"

    def __init__(self, spec: SeqSpec):
        super().__init__(batch_size=spec.train.batch_size, eval_batch_size=spec.evaluation.batch_size,
                         num_workers=spec.train.num_workers,
                         spec_keys={"train": "data.num_train", "val": "data.num_val"})
        self.spec = spec
        self.train_items = make_items(spec.data, spec.data.num_train, spec.train.batch_size, spec.train.seed)
        self.val_items = make_items(spec.data, spec.data.num_val, spec.evaluation.batch_size, spec.train.seed + 1)

    def make_dataset(self, items: list, train: bool) -> list:
        return items  # a list is a map-style dataset

    def collate_fn(self, train: bool):
        return collate_shortest


class SeqModule(TaskModule):
    def training_step(self, batch, batch_idx):
        tokens, labels, _ = batch
        loss = F.cross_entropy(self(tokens), labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=len(labels))
        return loss

    def validation_step(self, batch, batch_idx):
        tokens, labels, _ = batch
        logits = self(tokens)
        self.log("val/loss", F.cross_entropy(logits, labels), on_epoch=True, batch_size=len(labels))
        self.log("val/acc", (logits.argmax(1) == labels).float().mean(), on_epoch=True, batch_size=len(labels))


class SeqTask(Task):
    name = NAME
    spec_class = SeqSpec
    monitor = "val/acc"
    monitor_mode = "max"
    output_names = ("logits",)
    headline = "accuracy"
    item_kind = "sequences"
    description = "test task: token-id sequence classification"

    def build_data(self, spec: SeqSpec, meta: ModelMeta | None = None) -> SeqData:
        return SeqData(spec)

    def build_training_module(self, spec: SeqSpec, data: SeqData):
        d, m = spec.data, spec.model
        tokens = InputSpec(name="tokens", dtype="int64", shape=("batch", "length"), value_range=(0, d.vocab_size))
        meta = ModelMeta(task=self.name, classes=tuple(f"class_{i}" for i in range(d.num_classes)), backbone=None,
                         inputs=(tokens,), arch={"vocab_size": d.vocab_size, "embed_dim": m.embed_dim,
                                                 "channels": m.channels})
        if m.pruned:
            net, meta = self.load_pruned(m, meta)
        else:
            net = self.build_net(meta)
        return SeqModule(net, meta, spec.train), None

    def build_net(self, meta: ModelMeta) -> nn.Module:
        a = meta.arch
        net = SeqNet(a["vocab_size"], a["embed_dim"], a["channels"], len(meta.classes))
        if meta.pruned_shapes:
            apply_layer_shapes(net, meta.pruned_shapes)
        return net

    def prune_ignored_layers(self, net: SeqNet) -> list[nn.Module]:
        return [net.fc]

    def evaluate(self, spec: SeqSpec, predictor: Predictor, data: SeqData, out_dir: Path) -> dict[str, Any]:
        correct = total = 0
        predictions = []
        for tokens, labels in usable_batches(data.val_dataloader(), data.skipped):
            predicted = predictor(tokens)[0].argmax(1)
            correct += int((predicted == labels).sum())
            total += len(labels)
            predictions += predicted.tolist()
        return {"accuracy": correct / total, "num_sequences": total, "predictions": predictions,
                f"skipped_{self.item_kind}": skipped_report(data.skipped),
                "model": {"file": str(predictor.source), "runtime": predictor.kind}}


TASK = SeqTask()
