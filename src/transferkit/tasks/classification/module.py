"""Classification training logic on top of the shared TaskModule."""
from __future__ import annotations

import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from ...engine.meta import ModelMeta
from ...engine.module import write_image
from ...vision.task import VisionModule
from .spec import ClassificationTrainConfig
from .viz import labelled_grid_image


class ClassificationModule(VisionModule):
    def __init__(self, net, meta: ModelMeta, train: ClassificationTrainConfig):
        super().__init__(net, meta, train)
        n = len(meta.classes)
        self.val_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.top_k = min(5, n)
        self.val_topk = MulticlassAccuracy(num_classes=n, top_k=self.top_k, average="micro")
        self._grid_logged = False

    def training_step(self, batch, batch_idx):
        images, labels, bad = batch
        self.note_skipped(bad)
        if len(labels) == 0:
            return None
        logits = self(self.prepare_images(images))
        loss = F.cross_entropy(logits, labels, label_smoothing=self.train_cfg.label_smoothing)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(labels))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._grid_logged = False

    def validation_step(self, batch, batch_idx):
        images, labels, bad = batch
        self.note_skipped(bad)
        if len(labels) == 0:
            return
        logits = self(self.prepare_images(images))
        loss = F.cross_entropy(logits, labels)
        self.val_acc.update(logits, labels)
        self.val_topk.update(logits, labels)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=len(labels), sync_dist=True)
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True)
        if self.top_k > 1:
            self.log(f"val/top{self.top_k}", self.val_topk, on_epoch=True)
        writer = self.tensorboard
        if writer is not None and not self._grid_logged and not self.trainer.sanity_checking:
            self._grid_logged = True
            pred = logits.argmax(1)
            classes = self.meta.classes
            texts = [f"{classes[p]}" + ("" if p == t else f" (true {classes[t]})") for p, t in zip(pred.tolist(), labels.tolist())]
            grid = labelled_grid_image(images[:16], texts[:16], self.meta.image.mean, self.meta.image.std,
                                       correct=(pred == labels)[:16].tolist())
            write_image(writer, "val/predictions", grid, self.current_epoch)
