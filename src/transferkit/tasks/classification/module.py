"""Classification training logic on top of the shared TaskModule."""
from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from ...engine.meta import ModelMeta
from ...engine.module import write_image
from ...optimize.distill import distillation_loss
from ...vision.batch_augment import BatchAugment, EncodedImages, decode_squares
from ...vision.task import VisionModule
from .spec import ClassificationTrainConfig, DistillConfig
from .viz import labelled_grid_image


class ClassificationModule(VisionModule):
    """Cross-entropy training of a classifier. With `augment` (data.augment_on=device) training batches arrive
    as uint8 squares -- or as JPEG bytes, decoded here before they move -- and are augmented on the device."""

    def __init__(self, net, meta: ModelMeta, train: ClassificationTrainConfig, augment: BatchAugment | None = None,
                 max_pixels: int | None = None, teacher: torch.nn.Module | None = None,
                 distill: DistillConfig | None = None):
        super().__init__(net, meta, train)
        # Held in a tuple, not as a submodule: the teacher is neither trained nor saved in checkpoints.
        self._teacher = (teacher,) if teacher is not None else ()
        self.distill = distill
        self.augment = augment
        self.max_pixels = max_pixels  # data.max_image_pixels, for a JPEG the device decoder hands back to PIL
        self._augment_step, self._augment_micro = -1, 0
        n = len(meta.classes)
        self.val_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.top_k = min(5, n)
        self.val_topk = MulticlassAccuracy(num_classes=n, top_k=self.top_k, average="micro")
        self._grid_logged = False

    # -- data.augment_on=device ---------------------------------------------------------------------
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """JPEG bytes (EncodedImages) -> uint8 squares decoded on this module's device, before the move."""
        if not (isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], EncodedImages)):
            return batch
        encoded, labels, bad = batch
        size = self.augment.size if self.augment is not None else self.meta.image.height
        images, kept, failed = decode_squares(encoded, size, self.device, self.max_pixels)
        if len(kept) < len(labels):
            labels = labels[torch.tensor(kept, dtype=torch.long)]
        return images, labels, [*bad, *failed]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """A training batch of uint8 squares -> augmented, normalised float images (validation batches pass)."""
        if self.augment is None or not self.trainer.training or self.trainer.sanity_checking:
            return batch
        images, labels, bad = batch
        if len(labels) == 0:
            return batch
        return self.prepare_images(self.augment(images, self.augment_generator())), labels, bad

    def augment_generator(self) -> torch.Generator:
        """A CPU generator seeded from train.seed, the rank, the optimizer step and the batch's place within that
        step (gradient accumulation): a run resumed from a checkpoint draws the augmentations it would have."""
        step = self.global_step
        if step != self._augment_step:
            self._augment_step, self._augment_micro = step, 0
        else:
            self._augment_micro += 1
        key = f"{self.train_cfg.seed}/{self.global_rank}/{step}/{self._augment_micro}".encode()
        seed = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
        return torch.Generator().manual_seed(seed)

    def on_fit_start(self) -> None:
        for teacher in self._teacher:
            teacher.to(self.device).eval()

    def training_step(self, batch, batch_idx):
        images, labels, bad = batch
        self.note_skipped(bad)
        if len(labels) == 0:
            return None
        images = self.prepare_images(images)
        logits = self(images)
        if self._teacher:
            with torch.no_grad():
                teacher_logits = self._teacher[0](images)
            loss, ce, kd = distillation_loss(logits, teacher_logits, labels, self.distill.weight,
                                             self.distill.temperature, self.train_cfg.label_smoothing)
            self.log("train/loss_ce", ce, on_step=False, on_epoch=True, batch_size=len(labels))
            self.log("train/loss_kd", kd, on_step=False, on_epoch=True, batch_size=len(labels))
        else:
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
