"""Text classification training: cross-entropy (softmax) or binary cross-entropy per label (multi-label), with
validation accuracy and macro F1 computed from counts summed over the epoch (and over DDP processes)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...engine.meta import ModelMeta
from ...metrics.text import confusion_report, label_scores
from ...spec import TrainConfig
from ...text.module import TextModule


class TextClassificationModule(TextModule):
    def __init__(self, net, meta: ModelMeta, train: TrainConfig, thresholds: torch.Tensor | None = None):
        super().__init__(net, meta, train)
        self.multi_label = bool(meta.arch.get("multi_label"))
        n = len(meta.classes)
        if thresholds is None:
            thresholds = torch.full((n,), 0.5)
        self.register_buffer("thresholds", thresholds.float(), persistent=False)
        # single-label: the confusion matrix; multi-label: per label [true, predicted, both] and exact matches
        self.register_buffer("_counts", torch.zeros((n, n) if not self.multi_label else (n, 3), dtype=torch.long),
                             persistent=False)
        self.register_buffer("_exact", torch.zeros(2, dtype=torch.long), persistent=False)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.multi_label:
            return F.binary_cross_entropy_with_logits(logits, targets)
        return F.cross_entropy(logits, targets)

    def on_validation_epoch_start(self) -> None:
        self._counts.zero_()
        self._exact.zero_()

    def count(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        if self.multi_label:
            true = targets > 0.5
            pred = torch.sigmoid(logits.float()) >= self.thresholds
            self._counts += torch.stack([true.sum(0), pred.sum(0), (true & pred).sum(0)], 1)
            self._exact += torch.stack([(true == pred).all(1).sum(), torch.tensor(len(true), device=true.device)])
        else:
            n = len(self.meta.classes)
            self._counts += torch.bincount(targets * n + logits.argmax(1), minlength=n * n).reshape(n, n)

    def on_validation_epoch_end(self) -> None:
        counts, exact = self._counts, self._exact
        if self.trainer is not None and self.trainer.world_size > 1:
            counts, exact = self.all_gather(counts).sum(0), self.all_gather(exact).sum(0)
        counts = counts.cpu().numpy()
        classes = list(self.meta.classes)
        if self.multi_label:
            if int(exact[1]) == 0:
                return
            true, pred, both = counts.T
            scores = label_scores(both, pred - both, true - both, classes)
            scores["accuracy"] = float(exact[0]) / float(exact[1])
        else:
            if int(counts.sum()) == 0:
                return
            scores = confusion_report(counts, classes)
        self.log("val/acc", scores["accuracy"], prog_bar=True)
        self.log("val/f1_macro", scores["f1_macro"], prog_bar=True)
