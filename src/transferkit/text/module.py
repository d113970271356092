"""TextModule: the training steps every text task shares. A batch is (input_ids, attention_mask, targets, skipped
entries) as text.data.TextCollate makes it; a task gives the loss and what validation tallies from each batch."""
from __future__ import annotations

import torch

from ..engine.module import TaskModule


class TextModule(TaskModule):
    """Subclasses implement `loss(logits, targets)` and `count(logits, targets)` (validation tallies, summed over the
    epoch and read in on_validation_epoch_end)."""

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def count(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        raise NotImplementedError

    def training_step(self, batch, batch_idx):
        ids, mask, targets, bad = batch
        self.note_skipped(bad)
        if ids is None:  # every sample of the batch was unusable
            return None
        loss = self.loss(self(ids, mask), targets)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(ids))
        return loss

    def validation_step(self, batch, batch_idx):
        ids, mask, targets, bad = batch
        self.note_skipped(bad)
        if ids is None:
            return
        logits = self(ids, mask)
        self.log("val/loss", self.loss(logits, targets), on_epoch=True, prog_bar=True, batch_size=len(ids),
                 sync_dist=True)
        self.count(logits, targets)
