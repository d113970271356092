"""Image classification: ImageFolder/CSV data, a zoo backbone with a linear head."""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...data.items import skipped_report, usable_batches
from ...data.module import build_loader
from ...errors import DataError, SpecError
from ...io import atomic_write_bytes, atomic_write_json, atomic_write_text
from ...optimize.distill import load_teacher, resolve_teacher
from ...optimize.prune import apply_layer_shapes
from ...spec import require_path
from ...zoo import get_image_entry
from ...engine.meta import ModelMeta, image_input
from ...vision.datasets import ImageDataset, collate_labelled
from ...vision.images import collect_images, load_image, output_names
from ...vision.task import VisionTask
from ..base import Predictor
from .data import ClassificationData, build_batch_augment, build_transforms
from .metrics import classification_metrics
from .model import ClassifierNet, build_classifier
from .module import ClassificationModule
from .spec import ClassificationSpec
from ...metrics.plots import save_confusion_png
from .viz import draw_caption

log = logging.getLogger("transferkit")


class ClassificationTask(VisionTask):
    name = "classification"
    spec_class = ClassificationSpec
    monitor = "val/acc"
    monitor_mode = "max"
    output_names = ("logits",)
    headline = "top1"
    description = "image classification (ImageFolder or CSV)"

    def normalisation(self, backbone: str) -> tuple[tuple, tuple]:
        entry = get_image_entry(backbone)
        return tuple(entry.mean), tuple(entry.std)

    def build_data(self, spec: ClassificationSpec, meta: ModelMeta | None = None) -> ClassificationData:
        if meta is None:
            mean, std = self.normalisation(spec.model.backbone)
            return ClassificationData(spec, mean, std)
        return ClassificationData(spec, meta.image.mean, meta.image.std, list(meta.classes))

    def build_training_module(self, spec: ClassificationSpec, data: ClassificationData):
        m = spec.model
        if not data.train_items:
            raise SpecError("data.train_dir (or data.train_csv) is not set or has no usable images; "
                            "training needs it, e.g. data.train_dir=demo_data/digits/train")
        if isinstance(m.pretrained, str):
            require_path("model.pretrained", m.pretrained, "file")
        size = spec.data.image_size
        meta = ModelMeta(task=self.name, classes=tuple(data.classes), backbone=m.backbone,
                         inputs=(image_input(size, size, data.mean, data.std),), arch={"dropout": m.dropout})
        if m.pruned:
            net, meta = self.load_pruned(m, meta)
            report = None
        else:
            net, report = build_classifier(m.backbone, data.classes, m.pretrained, m.dropout, m.freeze_blocks, m.freeze_bn)
        teacher = None
        if spec.distill.teacher:
            path = resolve_teacher(spec.distill.teacher, m.pruned)
            teacher = load_teacher(self, path, meta)
            meta = meta.with_updates(history={**meta.history, "distill": {
                "teacher": str(path), "weight": spec.distill.weight, "temperature": spec.distill.temperature}})
            log.info("distilling from teacher %s (weight %g, temperature %g)", path, spec.distill.weight,
                     spec.distill.temperature)
        # data.augment_on=device: the module augments the training batches once they are on the device.
        augment = build_batch_augment(spec, data.mean, data.std) if spec.data.augment_on == "device" else None
        return ClassificationModule(net, meta, spec.train, augment, spec.data.max_image_pixels, teacher,
                                    spec.distill), report

    def build_net(self, meta: ModelMeta) -> nn.Module:
        net, _ = build_classifier(meta.backbone, list(meta.classes), False, meta.arch.get("dropout", 0.0))
        if meta.pruned_shapes:
            apply_layer_shapes(net, meta.pruned_shapes)
        return net

    def prune_ignored_layers(self, net: ClassifierNet) -> list[nn.Module]:
        return [net.fc]

    def spec_for_model(self, spec: ClassificationSpec, meta: ModelMeta) -> ClassificationSpec:
        size = meta.image.height
        if spec.data.image_size == size:
            return spec
        log.info("using the model's input size %d (spec says %d)", size, spec.data.image_size)
        return spec.model_copy(update={"data": spec.data.model_copy(update={"image_size": size})})

    # -- evaluate ------------------------------------------------------------------------------
    def evaluate(self, spec: ClassificationSpec, predictor: Predictor, data: ClassificationData, out_dir: Path) -> dict:
        classes = list(predictor.meta.classes)
        all_logits, all_labels = [], []
        for images, labels in usable_batches(data.val_dataloader(), data.skipped):
            all_logits.append(predictor(images)[0].float().cpu().numpy())
            all_labels.append(labels.numpy())
        if not all_logits:
            raise DataError("no usable validation images to evaluate; check data.val_dir / data.val_csv")
        logits = np.concatenate(all_logits)
        labels = np.concatenate(all_labels)
        metrics = classification_metrics(logits, labels, classes, spec.evaluation.top_k)
        matrix = np.array(metrics["confusion_matrix"]["rows_true_cols_predicted"])
        atomic_write_json(out_dir / "confusion_matrix.json", metrics["confusion_matrix"])
        save_confusion_png(matrix, classes, out_dir / "confusion_matrix.png",
                           f"top-1 {metrics['top1']:.3f} on {metrics['num_images']} val images")
        metrics[f"skipped_{self.item_kind}"] = skipped_report(data.skipped)
        metrics["model"] = {"file": str(predictor.source), "runtime": predictor.kind}
        return metrics

    # -- inference -----------------------------------------------------------------------------
    def inference(self, spec: ClassificationSpec, predictor: Predictor, out_dir: Path) -> dict:
        meta = predictor.meta
        paths = collect_images(spec.inference.images)
        # annotated/ keeps each image's path below their shared folder: a/x.png and b/x.png are two pictures.
        pictures = output_names(paths) if spec.inference.annotate else []
        transform = build_transforms(spec, meta.image.mean, meta.image.std, train=False)
        # The label slot carries each image's index in `paths`: a batch still names its images
        # after the bad ones have dropped out.
        dataset = ImageDataset([(p, i) for i, p in enumerate(paths)], transform, spec.data.max_image_pixels)
        loader = build_loader(dataset, spec.inference.batch_size, train=False, collate_fn=collate_labelled)
        classes = list(meta.classes)
        k = min(spec.inference.top_k, len(classes))
        rows, bad = [], {}
        annotated = out_dir / "annotated"
        for images, indices in usable_batches(loader, bad):
            probs = torch.softmax(predictor(images)[0].float(), 1)
            scores, idx = probs.topk(k, dim=1)
            for n, s, i in zip(indices.tolist(), scores.tolist(), idx.tolist()):
                path = paths[n]
                rows.append([str(path)] + [v for pair in zip([classes[j] for j in i], [f"{x:.4f}" for x in s]) for v in pair])
                if spec.inference.annotate:
                    buf = io.BytesIO()
                    image = load_image(path, max_pixels=spec.data.max_image_pixels)
                    draw_caption(image, f"{classes[i[0]]} {s[0]:.2f}").save(buf, format="PNG")
                    atomic_write_bytes(annotated / pictures[n], buf.getvalue())
        header = ["path"] + [f"{name}{r}" for r in range(1, k + 1) for name in ("label", "score")]
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
        atomic_write_text(out_dir / "predictions.csv", out.getvalue())
        return {"images": len(rows), f"skipped_{self.item_kind}": skipped_report(bad),
                "predictions": str(out_dir / "predictions.csv"), "model": {"file": str(predictor.source), "runtime": predictor.kind}}


TASK = ClassificationTask()
