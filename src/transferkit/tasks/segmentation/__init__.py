"""Semantic segmentation: a UNet decoder on any zoo backbone (or vanilla_unet), image + mask folders or COCO."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...data.items import skipped_report, usable_batches
from ...engine.meta import ModelMeta, image_input
from ...errors import DataError, SpecError
from ...io import atomic_write_json
from ...metrics.segmentation import ConfusionMatrix, save_confusion_png
from ...optimize.prune import apply_layer_shapes
from ...spec import require_path
from ...vision.task import VisionTask
from ...zoo import IMAGENET_MEAN, IMAGENET_STD, get_image_entry
from ..base import ExportGraph, Predictor
from ...vision.masks import MaskError, load_target, overlay, read_prediction, save_mask_png
from .data import (SegmentationData, SegmentationInferenceImages, collate_inference, convert_dataset,
                   restore_size)
from .loss import resolve_class_weights
from .model import VANILLA_UNET, build_segmenter
from .module import SegmentationModule, output_table
from .spec import SegmentationSpec

log = logging.getLogger("transferkit")

ARGMAX_AGREEMENT = 0.999  # export parity: share of pixels whose class must agree between PyTorch and ONNX Runtime


class SegmentationTask(VisionTask):
    name = "segmentation"
    spec_class = SegmentationSpec
    monitor = "val/mIoU"
    monitor_mode = "max"
    output_names = ("logits",)
    headline = "mIoU"
    description = "semantic segmentation, UNet on any backbone (image + mask folders, or COCO polygons / RLE)"

    @property
    def extra_verbs(self):
        return {"dataset_convert": self.dataset_convert}

    # -- data and model ------------------------------------------------------------------------
    def normalisation(self, spec: SegmentationSpec) -> tuple[tuple, tuple]:
        if spec.model.backbone == VANILLA_UNET:
            return IMAGENET_MEAN, IMAGENET_STD
        entry = get_image_entry(spec.model.backbone)
        return tuple(entry.mean), tuple(entry.std)

    def build_data(self, spec: SegmentationSpec, meta: ModelMeta | None = None) -> SegmentationData:
        if meta is None:
            mean, std = self.normalisation(spec)
            return SegmentationData(spec, mean, std)
        return SegmentationData(spec, meta.image.mean, meta.image.std, list(meta.classes))

    def build_training_module(self, spec: SegmentationSpec, data: SegmentationData):
        d, m = spec.data, spec.model
        if not data.train_items:
            raise DataError("data.train_images / data.train_masks hold no usable images to train on")
        if isinstance(m.pretrained, str):
            require_path("model.pretrained", m.pretrained, "file")
        meta = ModelMeta(task=self.name, classes=tuple(data.classes), backbone=m.backbone,
                         inputs=(image_input(d.image_height, d.image_width, data.mean, data.std),),
                         arch={"decoder_channels": m.decoder_channels and list(m.decoder_channels),
                               "upsampling": m.upsampling, "ignore_index": d.ignore_index,
                               "colours": [list(c) for c in data.table.colours]})
        report = None
        if m.pruned:
            net, meta = self.load_pruned(m, meta)
        else:
            net, report = build_segmenter(m.backbone, len(data.classes), m.pretrained, m.decoder_channels,
                                          m.freeze_blocks, m.freeze_bn, m.upsampling, classes=data.classes)
        return SegmentationModule(net, meta, spec.train, spec, self.class_weights(spec, data)), report

    def class_weights(self, spec: SegmentationSpec, data: SegmentationData) -> torch.Tensor | None:
        auto = spec.loss.class_weights == "auto"
        weights = resolve_class_weights(spec.loss.class_weights, len(data.classes), data.pixel_counts if auto else None)
        if auto:
            log.info("loss.class_weights=auto: %s", ", ".join(f"{c}={w:.2f}" for c, w in zip(data.classes, weights.tolist())))
        return weights

    def build_net(self, meta: ModelMeta) -> nn.Module:
        net, _ = build_segmenter(meta.backbone, len(meta.classes), False, meta.arch["decoder_channels"],
                                 upsampling=meta.arch["upsampling"])
        if meta.pruned_shapes:
            apply_layer_shapes(net, meta.pruned_shapes)
        return net

    def prune_ignored_layers(self, net: nn.Module) -> list[nn.Module]:
        return [net.head]

    # -- export --------------------------------------------------------------------------------
    def check_export(self, spec, net: nn.Module, graph: ExportGraph, onnx_path: Path,
                     probe: tuple[torch.Tensor, ...]) -> dict:
        """Logits within tolerance (relative to their scale), and the predicted class of nearly every pixel equal."""
        from ...errors import ModelError
        from ...optimize import verify_export
        from ...optimize.runtime import OnnxModel

        result = verify_export(graph.module, onnx_path, probe, atol=spec.export.parity_tolerance, rtol=0)
        with torch.inference_mode():
            eager = graph.module.eval()(*probe).argmax(1).numpy()
        exported = OnnxModel(onnx_path)(*(x.numpy() for x in probe))[0].argmax(1)
        agreement = float((eager == exported).mean())
        result["argmax_agreement"] = agreement
        if agreement < ARGMAX_AGREEMENT:
            raise ModelError(f"{onnx_path}: only {agreement:.2%} of pixels get the same class as in PyTorch "
                             f"(at least {ARGMAX_AGREEMENT:.1%} needed)")
        return result

    # -- evaluate ------------------------------------------------------------------------------
    def evaluate(self, spec: SegmentationSpec, predictor: Predictor, data: SegmentationData, out_dir: Path) -> dict:
        classes = list(predictor.meta.classes)
        confusion = ConfusionMatrix(len(classes), spec.data.ignore_index)
        images_seen = 0
        for images, masks in usable_batches(data.val_dataloader(), data.skipped):
            confusion.update(predictor(images)[0].argmax(1), masks)
            images_seen += len(images)
        if not images_seen:
            raise DataError("no usable validation images to evaluate; check data.val_images / data.val_masks")
        return self._report(confusion, classes, out_dir, images_seen, data, predictor)

    def _report(self, confusion: ConfusionMatrix, classes: list[str], out_dir: Path, images: int, data,
                predictor: Predictor | None, source: str | None = None) -> dict[str, Any]:
        metrics = confusion.result(classes)
        metrics["num_images"] = images
        atomic_write_json(out_dir / "confusion_matrix.json",
                          {"classes": classes, "rows_true_cols_predicted": confusion.matrix.tolist()})
        save_confusion_png(confusion.matrix, classes, out_dir / "confusion_matrix.png",
                           f"mIoU {metrics['mIoU'] or 0:.3f} on {images} val images")
        metrics[f"skipped_{self.item_kind}"] = skipped_report(data.skipped)
        metrics["data_problems"] = data.problems
        metrics["warnings"] = list(data.warnings)
        metrics["model"] = ({"file": str(predictor.source), "runtime": predictor.kind} if predictor is not None
                            else {"predictions": source})
        log.info("mIoU %.4f, pixel accuracy %.4f; IoU per class: %s", metrics["mIoU"] or 0.0, metrics["pixel_accuracy"],
                 ", ".join(f"{c}={v:.3f}" if v is not None else f"{c}=n/a" for c, v in metrics["IoU_per_class"].items()))
        return metrics

    def evaluate_without_model(self, spec: SegmentationSpec, out_dir: Path) -> dict | None:
        """`evaluation.predictions=DIR`: score mask PNGs of training indices (as `inference` writes them, named
        like the images) against the validation masks, at the images' own size."""
        if not spec.evaluation.predictions:
            return None
        folder = require_path("evaluation.predictions", spec.evaluation.predictions, "dir")
        mean, std = self.normalisation(spec)
        data = SegmentationData(spec, mean, std)
        data.scan("val")
        confusion = ConfusionMatrix(len(data.classes), spec.data.ignore_index)
        missing: dict[str, str] = {}
        for item in data.val_items:
            truth = load_target(item, data.table, spec.data.max_image_pixels)
            path = folder / f"{Path(item.image).stem}.png"
            if not path.is_file():
                missing[str(item.image)] = f"no prediction {path.name} in {folder}"
                continue
            try:
                predicted = read_prediction(path, len(data.classes), (truth.shape[1], truth.shape[0]))
            except MaskError as e:
                missing[str(item.image)] = str(e)
                continue
            confusion.update(predicted, truth)
        scored = len(data.val_items) - len(missing)
        if not scored:
            raise DataError(f"evaluation.predictions: none of the {len(data.val_items)} validation images has a "
                            f"readable prediction PNG (named <image stem>.png) in {folder}")
        metrics = self._report(confusion, data.classes, out_dir, scored, data, None, str(folder))
        metrics["missing_predictions"] = {"count": len(missing), "files": missing}
        return metrics

    # -- inference -----------------------------------------------------------------------------
    def inference(self, spec: SegmentationSpec, predictor: Predictor, out_dir: Path) -> dict:
        """masks/<stem>.png (training indices as a palette PNG, at the image's own size), overlays, polygons."""
        import io

        from PIL import Image

        from ...data.module import build_loader
        from ...io import atomic_write_bytes
        from ...vision.images import check_unique_stems, collect_images, load_image
        from ...vision.seg_convert import mask_annotations

        meta, inf = predictor.meta, spec.inference
        table = output_table(meta)
        paths = collect_images(inf.images)
        check_unique_stems(paths, "masks/{stem}.png")  # before any work: masks/ and overlays/ are named by stem
        dataset = SegmentationInferenceImages(paths, meta.image.width, meta.image.height, meta.image.mean,
                                              meta.image.std, spec.data.max_image_pixels)
        loader = build_loader(dataset, inf.batch_size, train=False, collate_fn=collate_inference)
        bad: dict[str, str] = {}
        written, annotations, images = [], [], []
        for batch_images, infos in usable_batches(loader, bad):
            for predicted, info in zip(predictor(batch_images)[0].argmax(1), infos):
                mask = restore_size(predicted, info.size)
                written.append(str(save_mask_png(out_dir / "masks" / f"{info.path.stem}.png", mask, table)))
                if inf.overlay:
                    picture = overlay(load_image(info.path, max_pixels=spec.data.max_image_pixels), mask, table)
                    buf = io.BytesIO()
                    Image.fromarray(picture).save(buf, format="PNG")
                    atomic_write_bytes(out_dir / "overlays" / f"{info.path.stem}.png", buf.getvalue())
                if inf.polygons:
                    image_id = len(images) + 1
                    images.append({"id": image_id, "file_name": str(info.path), "width": info.size[0],
                                   "height": info.size[1]})
                    annotations.extend(mask_annotations(mask, table, image_id, "polygons"))
        summary: dict[str, Any] = {"images": len(written), f"skipped_{self.item_kind}": skipped_report(bad),
                                   "masks": str(out_dir / "masks"),
                                   "model": {"file": str(predictor.source), "runtime": predictor.kind}}
        if inf.polygons:
            for number, annotation in enumerate(annotations, start=1):
                annotation["id"] = number
            categories = [{"id": i, "name": name} for i, name in enumerate(table.names)]
            summary["polygons"] = str(atomic_write_json(out_dir / "predictions.json", {
                "images": images, "annotations": annotations, "categories": categories}))
        return summary

    # -- dataset_convert -----------------------------------------------------------------------
    def dataset_convert(self, spec: SegmentationSpec, results: Path | None, model=None) -> dict:
        out = spec.dataset_convert.output_dir or (results / "converted" if results else None)
        if out is None:
            raise SpecError("dataset_convert needs dataset_convert.output_dir=DIR (or -r DIR)")
        report = convert_dataset(spec, out)
        for split, row in report.items():
            log.info("%s: %s", split, row)
        return report


TASK = SegmentationTask()
