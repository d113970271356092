"""Token classification training: cross-entropy over the first piece of every word (the other pieces, special
tokens and padding carry IGNORE_INDEX), with validation entity F1 (strict IOB2) and word accuracy from counts
summed over the epoch (and over DDP processes).

Validation here scores the words the model sees; words cut off by model.max_length are left out of this
monitor (evaluate counts them, as predicted O).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...engine.meta import ModelMeta
from ...spec import TrainConfig
from ...text.data import IGNORE_INDEX
from ...text.module import TextModule
from .formats import spans_from_iob2


def entity_counts(true: list[str], pred: list[str]) -> tuple[int, int, int]:
    """(entities found exactly, predicted, true) of one sentence's IOB2 tags, read strictly as entity_report does."""
    t, p = set(spans_from_iob2(true)), set(spans_from_iob2(pred))
    return len(t & p), len(p), len(t)


class TokenClassificationModule(TextModule):
    def __init__(self, net, meta: ModelMeta, train: TrainConfig):
        super().__init__(net, meta, train)
        # entities: found, predicted, true; words: right, all
        self.register_buffer("_counts", torch.zeros(5, dtype=torch.long), persistent=False)

    @staticmethod
    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if not bool((targets != IGNORE_INDEX).any()):  # every word cut off: nothing to learn, and no NaN
            return logits.sum() * 0.0
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)

    def on_validation_epoch_start(self) -> None:
        self._counts.zero_()

    def count(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        classes = self.meta.classes
        pred = logits.argmax(-1).cpu()
        targets = targets.cpu()
        counts = [0] * 5
        for row in range(len(targets)):
            words = targets[row] != IGNORE_INDEX  # first pieces, in word order
            true_tags = [classes[i] for i in targets[row][words].tolist()]
            pred_tags = [classes[i] for i in pred[row][words].tolist()]
            for k, n in enumerate(entity_counts(true_tags, pred_tags)):
                counts[k] += n
            counts[3] += sum(t == p for t, p in zip(true_tags, pred_tags))
            counts[4] += len(true_tags)
        self._counts += torch.tensor(counts, device=self._counts.device)

    def on_validation_epoch_end(self) -> None:
        counts = self._counts
        if self.trainer is not None and self.trainer.world_size > 1:
            counts = self.all_gather(counts).sum(0)
        found, predicted, true, right, words = (int(c) for c in counts)
        if words == 0:
            return
        precision = found / predicted if predicted else 0.0
        recall = found / true if true else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        self.log("val/f1", f1, prog_bar=True)
        self.log("val/precision", precision)
        self.log("val/recall", recall)
        self.log("val/word_acc", right / words)
