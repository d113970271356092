"""What every detection task shares: the data / evaluation / inference spec sections and the Task
base that evaluates, scores predictions on disk, and writes inference results.

A detection task supplies `predict` (an image batch -> boxes in network-input pixels) and its
model; evaluate, `evaluation.predictions=DIR`, and inference (KITTI labels with scores,
annotated images, detections.json) are written once here.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from pydantic import Field, field_validator

from ...vision.boxes import DetectionDataset, ImageBoxes
from .data import DetectionData, original_scale, read_detection_split
from ...data.items import skipped_report, usable_batches
from ...data.module import build_loader
from ...vision.datasets import DetectionImages, collate_detection
from ...vision.draw import boxes_grid, draw_boxes, to_pil_images
from ...engine.checkpoint import LoadReport, read_checkpoint, strip_prefix, transfer_weights
from ...vision.images import check_unique_stems, collect_images, load_image
from ...errors import DataError, SpecError
from ...io import atomic_write_bytes, atomic_write_json, atomic_write_text
from ...metrics import evaluate_detections, format_ap_table, save_pr_curves
from ...optimize.prune import apply_layer_shapes
from ...spec import SpecModel, require_path
from ...zoo import get_image_entry
from ...engine.meta import ModelMeta, image_input
from ...vision.spec import CacheMode, cache_dir_field, cache_field
from ...vision.task import VisionModule, VisionTask
from ..base import Predictor

log = logging.getLogger("transferkit")


# -- spec sections ------------------------------------------------------------------------------

class DetectionDataConfig(SpecModel):
    """The `data` keys of every detection task; tasks subclass it to add their `augmentation` section."""

    format: Literal["kitti", "coco", "yolo"] = Field("kitti", description="label format: kitti | coco | yolo")
    train_images: str | None = Field(None, description="folder of training images")
    train_labels: str | None = Field(None, description="KITTI/YOLO label folder, or the COCO JSON file")
    val_images: str | None = Field(None, description="folder of validation images")
    val_labels: str | None = Field(None, description="KITTI/YOLO label folder, or the COCO JSON file")
    yolo_names: str | None = Field(None, description="YOLO only: class names file (.txt or data.yaml) the ids index")
    classes: list[str] | None = Field(None, description="trained class names; empty = every name in the labels")
    target_class_mapping: dict[str, str] = Field(
        default_factory=dict, description="source name -> trained name, e.g. {van: car}")
    image_width: int = Field(384, ge=32, le=4096, description="network input width (multiple of the output stride)")
    image_height: int = Field(256, ge=32, le=4096, description="network input height (multiple of the output stride)")
    max_image_pixels: int = Field(100_000_000, gt=0, description="refuse images larger than this many pixels")
    cache: CacheMode = cache_field()
    cache_dir: str | None = cache_dir_field()


class EvaluationConfig(SpecModel):
    mode: Literal["sample", "integrate", "coco"] = Field(
        "integrate", description="AP: sample (VOC07 11-point) | integrate (VOC10+) | coco (101-point)")
    iou_thresholds: float | dict[str, float] = Field(
        0.5, description="IoU for a match: one value, or per class {car: 0.7, default: 0.5}")
    predictions: str | None = Field(None, description="score KITTI prediction files in this folder instead of a model")
    batch_size: int = Field(16, gt=0, description="images per batch")

    @field_validator("iou_thresholds")
    @classmethod
    def _iou_in_range(cls, value: float | dict[str, float]) -> float | dict[str, float]:
        for name, t in (value.items() if isinstance(value, dict) else [("", value)]):
            if not 0 < t <= 1:
                raise ValueError(f"{name + ': ' if name else ''}{t} is not an IoU in (0, 1]")
        return value


class InferenceConfig(SpecModel):
    images: str | None = Field(None, description="folder of images, a single image, or a .txt list of paths")
    batch_size: int = Field(8, gt=0, description="images per batch")
    annotate: bool = Field(True, description="write copies of the images with the boxes drawn")
    score_threshold: float = Field(0.3, ge=0, description="boxes below this score are not drawn or written")


# -- the task base ------------------------------------------------------------------------------

class DetectionTask(VisionTask):
    monitor = "val/mAP"
    monitor_mode = "max"
    headline = "mAP"

    module_class: type = None  # the task's DetectionModule subclass: module_class(net, meta, spec.train, spec)

    # -- what a detection task supplies ---------------------------------------------------------
    def predict(self, spec, predictor: Predictor, images: torch.Tensor, targets: list[ImageBoxes]) -> list[ImageBoxes]:
        """Predicted boxes for a batch, in the same (network-input) pixels as `targets`."""
        raise NotImplementedError

    def network(self, meta: ModelMeta, pretrained, freeze_blocks=(), freeze_bn: bool = False) -> nn.Module:
        """The detector `meta` describes; `pretrained` as for build_backbone (True, False or a weight file)."""
        raise NotImplementedError

    def arch(self, spec) -> dict:
        """The task's architecture facts (ModelMeta.arch) that rebuild its network beside the backbone and classes."""
        return {}

    def check_input(self, spec) -> None:
        """Raise SpecError when the input size does not suit the network."""

    def normalisation(self, spec) -> tuple[list[float], list[float]]:
        entry = get_image_entry(spec.model.backbone)
        return list(entry.mean), list(entry.std)

    # -- shared ---------------------------------------------------------------------------------
    def build_data(self, spec, meta: ModelMeta | None = None) -> DetectionData:
        self.check_input(spec)
        if meta is None:
            mean, std = self.normalisation(spec)
            return DetectionData(spec, mean, std, None)
        return DetectionData(spec, list(meta.image.mean), list(meta.image.std), list(meta.classes))

    def build_training_module(self, spec, data: DetectionData):
        m = spec.model
        if not data.train_items:
            raise SpecError("data.train_images / data.train_labels are not set or hold no usable images")
        image = image_input(spec.data.image_height, spec.data.image_width, data.mean, data.std)
        meta = ModelMeta(task=self.name, classes=tuple(data.classes), backbone=m.backbone, inputs=(image,),
                         arch=self.arch(spec))
        report = None
        if m.pruned:
            net, meta = self.load_pruned(m, meta)
        else:
            pretrained = m.pretrained
            if isinstance(pretrained, str):
                require_path("model.pretrained", pretrained, "file")
            ckpt = isinstance(pretrained, str) and pretrained.endswith(".ckpt")
            net = self.network(meta, False if ckpt else pretrained, m.freeze_blocks, m.freeze_bn)
            report = self.transfer_report(net, pretrained)
        return self.module_class(net, meta, spec.train, spec), report

    def transfer_report(self, net: nn.Module, pretrained) -> LoadReport | None:
        """A .ckpt of any task: its matching tensors are copied in; otherwise what the backbone loaded."""
        if isinstance(pretrained, str) and pretrained.endswith(".ckpt"):
            _, state = read_checkpoint(pretrained)  # any task's backbone transfers
            return transfer_weights(net, strip_prefix(state, "net."), pretrained)
        return LoadReport.backbone_only(net, "new detection head")

    def build_net(self, meta: ModelMeta) -> nn.Module:
        net = self.network(meta, False)
        if meta.pruned_shapes:
            apply_layer_shapes(net, meta.pruned_shapes)
        return net

    # -- evaluate ------------------------------------------------------------------------------
    def evaluate(self, spec, predictor: Predictor, data, out_dir: Path) -> dict:
        gts, preds = [], []
        for images, targets in usable_batches(data.val_dataloader(), data.skipped):
            gts.extend(targets)
            preds.extend(self.predict(spec, predictor, images, targets))
        if not gts:
            raise DataError("no usable validation images to evaluate; check data.val_images / data.val_labels")
        metrics = self.score(spec, gts, preds, list(predictor.meta.classes), out_dir)
        metrics[f"skipped_{self.item_kind}"] = skipped_report(data.skipped)
        metrics["data_problems"] = data.problems
        metrics["warnings"] = list(data.warnings)
        metrics["model"] = {"file": str(predictor.source), "runtime": predictor.kind}
        return metrics

    def score(self, spec, gts: list[ImageBoxes], preds: list[ImageBoxes], classes: list[str], out_dir: Path) -> dict:
        """AP metrics, PR curves and ap_table.txt for predictions against ground truth."""
        e = spec.evaluation
        result = evaluate_detections(gts, preds, classes, e.iou_thresholds, e.mode)
        save_pr_curves(result, out_dir)
        table = format_ap_table(result)
        atomic_write_text(out_dir / "ap_table.txt", table + "\n")
        log.info("\n%s", table)
        return {"mAP": float(result["mAP"] or 0.0), "AP_per_class": result["AP_per_class"],
                "AP50_95": result["AP50_95"], "mode": result["mode"], "iou_thresholds": result["iou_thresholds"],
                "num_gt": result["num_gt"], "num_pred": result["num_pred"], "num_images": len(gts)}

    def evaluate_without_model(self, spec, out_dir: Path) -> dict | None:
        """`evaluation.predictions=DIR`: score KITTI prediction files (16th field = score) against val labels."""
        if not spec.evaluation.predictions:
            return None
        pred_dir = require_path("evaluation.predictions", spec.evaluation.predictions, "dir")
        gt = read_detection_split(spec.data, "val", spec.data.classes)
        if gt is None:
            raise SpecError("evaluation.predictions needs data.val_images and data.val_labels to score against")
        from ...vision.formats import read_kitti

        predicted = read_kitti(require_path("data.val_images", spec.data.val_images, "dir"), pred_dir, gt.classes,
                               dict(spec.data.target_class_mapping))
        by_path = {str(p.image): p for p in predicted.items}
        preds = []
        for item in gt.items:
            p = by_path.get(str(item.image))
            preds.append(p if p is not None and p.scores is not None else
                         ImageBoxes(image=item.image, boxes=np.zeros((0, 4)), labels=np.zeros(0), scores=np.zeros(0)))
        metrics = self.score(spec, gt.items, preds, gt.classes, out_dir)
        metrics["model"] = {"predictions": str(pred_dir)}
        metrics["data_problems"] = {"val": gt.problems.as_dict(), "predictions": predicted.problems.as_dict()}
        return metrics

    # -- inference -----------------------------------------------------------------------------
    def inference(self, spec, predictor: Predictor, out_dir: Path) -> dict:
        from ...vision.convert import kitti_names, write_kitti

        meta = predictor.meta
        paths = collect_images(spec.inference.images)
        # Refused before any work or write: labels/ and annotated/ name each file by its image's stem alone.
        check_unique_stems(paths, "labels/{stem}.txt")
        for name, written in zip(meta.classes, kitti_names(list(meta.classes))):
            if name != written:
                log.info("class '%s' is written as '%s' in the KITTI labels (their rows are space-separated)",
                         name, written)
        items = [ImageBoxes(image=p, boxes=np.zeros((0, 4)), labels=np.zeros(0)) for p in paths]
        image = meta.image
        dataset = DetectionImages(items, image.width, image.height, list(image.mean), list(image.std), None,
                                  spec.data.max_image_pixels)
        loader = build_loader(dataset, spec.inference.batch_size, train=False, collate_fn=collate_detection)
        classes = list(meta.classes)
        results, bad, records = [], {}, []
        for images, targets in usable_batches(loader, bad):
            for target, pred in zip(targets, self.predict(spec, predictor, images, targets)):
                final = self._to_original(target, pred, spec.inference.score_threshold)
                results.append(final)
                records.append({"image": str(target.image), "detections": [
                    {"class": classes[int(c)], "score": round(float(s), 4), "box": [round(float(v), 2) for v in b]}
                    for b, c, s in zip(final.boxes, final.labels, final.scores)]})
                if spec.inference.annotate:
                    picture = draw_boxes(load_image(target.image, spec.data.max_image_pixels), final.boxes,
                                         final.labels, classes, final.scores)
                    buf = io.BytesIO()
                    picture.save(buf, format="PNG")
                    atomic_write_bytes(out_dir / "annotated" / f"{Path(target.image).stem}.png", buf.getvalue())
        written = write_kitti(DetectionDataset(classes=classes, items=results), out_dir / "labels")
        atomic_write_json(out_dir / "detections.json", records)
        return {"images": len(results), "detections": sum(len(r.boxes) for r in results),
                f"skipped_{self.item_kind}": skipped_report(bad), "labels": str(out_dir / "labels"),
                **({"kitti_names": written["kitti_names"]} if "kitti_names" in written else {}),
                "model": {"file": str(predictor.source), "runtime": predictor.kind}}

    @staticmethod
    def _to_original(target: ImageBoxes, pred: ImageBoxes, score_threshold: float) -> ImageBoxes:
        """Predictions above the threshold, scaled from network-input pixels to the image file's pixels."""
        keep = pred.scores >= score_threshold
        ow, oh = target.original_size
        return ImageBoxes(image=target.image, boxes=original_scale(target, pred.boxes[keep]), labels=pred.labels[keep],
                          scores=pred.scores[keep], width=ow, height=oh)


# -- the training module base ---------------------------------------------------------------------

class DetectionModule(VisionModule):
    """Training and validation every detection task shares: losses logged per stage, val mAP and
    per-class AP after the task's post-processing, and a TensorBoard grid of predictions vs labels.

    A task supplies `compute_losses` (raw outputs + targets -> {"total": ..., "<part>": ...}) and
    `predict_outputs` (raw outputs -> boxes in network-input pixels).
    """

    def __init__(self, net, meta: dict, train, evaluation: EvaluationConfig):
        super().__init__(net, meta, train)
        self.evaluation = evaluation
        self._gt: list[ImageBoxes] = []
        self._pred: list[ImageBoxes] = []
        self._grid = None

    def compute_losses(self, outputs, targets: list[ImageBoxes]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict_outputs(self, outputs, targets: list[ImageBoxes]) -> list[ImageBoxes]:
        raise NotImplementedError

    def _step(self, batch, stage: str):
        images, targets, bad = batch
        self.note_skipped(bad)
        if not targets:
            return None, None
        outputs = self(self.prepare_images(images))
        losses = self.compute_losses(outputs, targets)
        n, sync = len(targets), stage == "val"
        for key, value in losses.items():
            name = f"{stage}/loss" if key == "total" else f"{stage}/{key}_loss"
            self.log(name, value, on_step=key == "total" and stage == "train", on_epoch=True, prog_bar=key == "total",
                     batch_size=n, sync_dist=sync)
        return losses["total"], outputs

    def training_step(self, batch, batch_idx):
        loss, _ = self._step(batch, "train")
        return loss

    def on_validation_epoch_start(self) -> None:
        self._gt, self._pred, self._grid = [], [], None

    def validation_step(self, batch, batch_idx):
        _, outputs = self._step(batch, "val")
        if outputs is None:
            return
        targets = batch[1]
        preds = self.predict_outputs(outputs, targets)
        self._gt.extend(targets)
        self._pred.extend(preds)
        if self._grid is None and self.tensorboard is not None:
            self._grid = (batch[0][:8].float().cpu(), targets[:8], preds[:8])

    def on_validation_epoch_end(self) -> None:
        if not self._gt or self.trainer.sanity_checking:
            return
        classes = list(self.meta.classes)
        result = evaluate_detections(self._gt, self._pred, classes, self.evaluation.iou_thresholds, self.evaluation.mode)
        # In DDP each rank scores its shard; the logged value is their mean (rank 0's files hold the rest).
        self.log("val/mAP", float(result["mAP"] or 0.0), prog_bar=True, sync_dist=True)
        for name, ap in result["AP_per_class"].items():
            if ap is not None:
                self.log(f"val/AP/{name}", float(ap), sync_dist=True)
        writer = self.tensorboard
        if writer is not None and self._grid is not None:
            images, targets, preds = self._grid
            pictures = to_pil_images(images, self.meta.image.mean, self.meta.image.std)
            grid = boxes_grid(pictures, classes, predictions=preds, ground_truth=targets, cell_size=256)
            writer.add_image("val/predictions", grid, self.current_epoch)

