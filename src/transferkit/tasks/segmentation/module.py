"""Segmentation training: cross-entropy (+ Dice) on masks, val mIoU from one confusion matrix per epoch."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ...engine.meta import ModelMeta
from ...engine.module import write_image
from ...metrics.segmentation import ConfusionMatrix
from ...vision.draw import to_pil_images
from ...vision.masks import ClassTable, overlay
from ...vision.spec import VisionTrainConfig
from ...vision.task import VisionModule
from .loss import segmentation_loss
from .spec import SegmentationSpec


class SegmentationModule(VisionModule):
    def __init__(self, net, meta: ModelMeta, train: VisionTrainConfig, spec: SegmentationSpec,
                 class_weights: torch.Tensor | None = None):
        super().__init__(net, meta, train)
        self.loss_cfg = spec.loss
        self.ignore_index = spec.data.ignore_index
        self.register_buffer("class_weights", class_weights, persistent=False)
        self._confusion = ConfusionMatrix(len(meta.classes), self.ignore_index)
        self._grid: tuple | None = None

    def _step(self, batch, stage: str):
        images, masks, bad = batch
        self.note_skipped(bad)
        if images is None or len(images) == 0:
            return None, None
        logits = self(self.prepare_images(images))
        losses = segmentation_loss(logits.float(), masks, self.loss_cfg, self.class_weights, self.ignore_index)
        for key, value in losses.items():
            name = f"{stage}/loss" if key == "total" else f"{stage}/{key}_loss"
            self.log(name, value, on_step=key == "total" and stage == "train", on_epoch=True,
                     prog_bar=key == "total", batch_size=len(images), sync_dist=stage == "val")
        return losses["total"], logits

    def training_step(self, batch, batch_idx):
        loss, _ = self._step(batch, "train")
        return loss

    def on_validation_epoch_start(self) -> None:
        self._confusion = ConfusionMatrix(len(self.meta.classes), self.ignore_index)
        self._grid = None

    def validation_step(self, batch, batch_idx):
        _, logits = self._step(batch, "val")
        if logits is None:
            return
        images, masks = batch[0], batch[1]
        predicted = logits.argmax(1)
        self._confusion.update(predicted.cpu(), masks.cpu())
        if self._grid is None and self.tensorboard is not None:
            self._grid = (images[:4].float().cpu(), masks[:4].cpu(), predicted[:4].cpu())

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or self._confusion.matrix.sum() == 0:
            return
        result = self._confusion.result(list(self.meta.classes))
        # In DDP each rank scores its shard; the logged value is their mean.
        self.log("val/mIoU", float(result["mIoU"] or 0.0), prog_bar=True, sync_dist=True)
        self.log("val/pixel_accuracy", float(result["pixel_accuracy"]), sync_dist=True)
        for name, iou in result["IoU_per_class"].items():
            if iou is not None:
                self.log(f"val/IoU/{name}", float(iou), sync_dist=True)
        writer = self.tensorboard
        if writer is not None and self._grid is not None:
            write_image(writer, "val/image_truth_prediction", overlay_grid(*self._grid, self.meta, self.ignore_index),
                        self.current_epoch)


def output_table(meta: ModelMeta) -> ClassTable:
    """The class table of a model's outputs: class i is index i, in the colours it was trained with."""
    colours = meta.arch.get("colours") or [None] * len(meta.classes)
    return ClassTable.build([{"name": name, "ids": [i], "colour": colour}
                             for i, (name, colour) in enumerate(zip(meta.classes, colours))],
                            meta.arch.get("ignore_index", 255), key="model classes")


def overlay_grid(images: torch.Tensor, masks: torch.Tensor, predicted: torch.Tensor, meta: ModelMeta,
                 ignore_index: int) -> Image.Image:
    """Rows of image | ground truth overlay | prediction overlay, for TensorBoard."""
    table = output_table(meta)
    rows = []
    for picture, mask, pred in zip(to_pil_images(images, meta.image.mean, meta.image.std), masks.numpy(),
                                   predicted.numpy()):
        rows.append(np.concatenate([np.asarray(picture.convert("RGB")), overlay(picture, mask, table),
                                    overlay(picture, pred, table)], axis=1))
    return Image.fromarray(np.concatenate(rows, axis=0))
