"""DetectNet_v2: TAO's grid detector (coverage + bbox heads on a stride-16 backbone, box clustering)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...data.boxes import DetectionDataset, ImageBoxes
from ...data.detection_data import DetectionData, read_detection_split
from ...data.draw import draw_boxes
from ...data.images import load_image, parse_skipped
from ...engine.checkpoint import read_checkpoint
from ...errors import DataError, SpecError
from ...io import atomic_write_bytes, atomic_write_json, atomic_write_text
from ...metrics import evaluate_detections, format_ap_table, save_pr_curves
from ...optimize.prune import apply_layer_shapes
from ...spec import require_path
from ...zoo import get_entry
from ..base import Predictor, Task
from ..classification import collect_images
from .model import DetectNetV2, build_detectnet_v2, check_input_size
from .module import DetectNetModule, configs, predict_boxes
from .spec import DetectNetSpec

log = logging.getLogger("transferkit")


class DetectNetV2Task(Task):
    name = "detectnet_v2"
    spec_class = DetectNetSpec
    monitor = "val/mAP"
    monitor_mode = "max"
    output_names = ("coverage", "bbox")
    headline = "mAP"
    description = "object detection, TAO's DetectNet_v2 grid detector (KITTI / COCO / YOLO labels)"

    @property
    def extra_verbs(self):
        return {"dataset_convert": self.dataset_convert}

    def input_hw(self, meta: dict) -> tuple[int, int]:
        return meta["image_height"], meta["image_width"]

    def build_data(self, spec: DetectNetSpec, classes=None, mean=None, std=None) -> DetectionData:
        check_input_size(spec.data.image_width, spec.data.image_height)
        if mean is None:
            entry = get_entry(spec.model.backbone)
            mean, std = entry.mean, entry.std
        return DetectionData(spec, mean, std, classes)

    def build_training_module(self, spec: DetectNetSpec, data: DetectionData):
        m = spec.model
        if not data.train_items:
            raise SpecError("data.train_images / data.train_labels are not set or hold no usable images")
        meta = {
            "task": self.name, "classes": data.classes, "backbone": m.backbone,
            "image_width": spec.data.image_width, "image_height": spec.data.image_height,
            "mean": list(data.mean), "std": list(data.std), "bbox_scale": m.bbox_scale,
            "bbox_offset": m.bbox_offset, "pruned_shapes": None,
        }
        report = None
        if m.pruned:
            net = self.load_pruned(m, meta, data.classes)
        else:
            pretrained = m.pretrained
            if isinstance(pretrained, str):
                require_path("model.pretrained", pretrained, "file")
            ckpt = isinstance(pretrained, str) and pretrained.endswith(".ckpt")
            net = build_detectnet_v2(m.backbone, len(data.classes), False if ckpt else pretrained,
                                     m.freeze_blocks, m.freeze_bn)
            report = self._transfer_report(net, pretrained)
        return DetectNetModule(net, meta, spec.train, spec), report

    def _transfer_report(self, net: DetectNetV2, pretrained):
        from ...engine.checkpoint import LoadReport, strip_prefix, transfer_weights

        if isinstance(pretrained, str) and pretrained.endswith(".ckpt"):
            _, state = read_checkpoint(pretrained)  # any task's backbone transfers
            return transfer_weights(net, strip_prefix(state, "net."), pretrained)
        info = getattr(net.backbone, "pretrained_info", None)
        if info is None:
            return None
        report = LoadReport(source=str(info.source))
        report.loaded = [f"backbone.{k}" for k in net.backbone.state_dict()]
        report.reinitialised = {k: "new detection head" for k in net.state_dict() if not k.startswith("backbone.")}
        return report

    def build_net(self, meta: dict) -> nn.Module:
        net = build_detectnet_v2(meta["backbone"], len(meta["classes"]), False)
        if meta.get("pruned_shapes"):
            apply_layer_shapes(net, meta["pruned_shapes"])
        return net

    def prune_ignored_layers(self, net: DetectNetV2) -> list[nn.Module]:
        return [m for name, m in net.named_modules() if not name.startswith("backbone.") and isinstance(m, nn.Conv2d)]

    def spec_for_model(self, spec: DetectNetSpec, meta: dict) -> DetectNetSpec:
        size = {"image_width": meta["image_width"], "image_height": meta["image_height"]}
        if all(getattr(spec.data, k) == v for k, v in size.items()):
            return spec
        log.info("using the model's input size %dx%d", meta["image_width"], meta["image_height"])
        return spec.model_copy(update={"data": spec.data.model_copy(update=size)})

    # -- evaluate ------------------------------------------------------------------------------
    def evaluate(self, spec: DetectNetSpec, predictor: Predictor, data: DetectionData, out_dir: Path) -> dict:
        _, _, cluster = configs(spec, predictor.meta["classes"])
        gts, preds, bad = [], [], {}
        for images, targets, skipped in data.val_dataloader():
            bad.update(parse_skipped(skipped))
            if targets:
                gts.extend(targets)
                preds.extend(predict_boxes(predictor(images), targets, cluster, predictor.meta))
        if not gts:
            raise DataError("no usable validation images to evaluate; check data.val_images / data.val_labels")
        metrics = self._score(spec, gts, preds, predictor.meta["classes"], out_dir)
        skipped = {**data.skipped, **bad}
        metrics["skipped_images"] = {"count": len(skipped), "files": skipped}
        metrics["data_problems"] = data.problems
        metrics["model"] = {"file": str(predictor.source), "runtime": predictor.kind}
        return metrics

    def _score(self, spec, gts, preds, classes, out_dir: Path) -> dict:
        e = spec.evaluation
        result = evaluate_detections(gts, preds, classes, e.iou_thresholds, e.mode)
        save_pr_curves(result, out_dir)
        table = format_ap_table(result)
        atomic_write_text(out_dir / "ap_table.txt", table + "\n")
        log.info("\n%s", table)
        return {"mAP": float(result["mAP"] or 0.0), "AP_per_class": result["AP_per_class"],
                "AP50_95": result["AP50_95"], "mode": result["mode"], "iou_thresholds": result["iou_thresholds"],
                "num_gt": result["num_gt"], "num_pred": result["num_pred"], "num_images": len(gts)}

    def evaluate_without_model(self, spec: DetectNetSpec, out_dir: Path) -> dict | None:
        """`evaluation.predictions=DIR`: score KITTI prediction files (16th field = score) against val labels."""
        if not spec.evaluation.predictions:
            return None
        pred_dir = require_path("evaluation.predictions", spec.evaluation.predictions, "dir")
        gt = read_detection_split(spec.data, "val", spec.data.classes)
        if gt is None:
            raise SpecError("evaluation.predictions needs data.val_images and data.val_labels to score against")
        from ...data.formats import read_kitti

        predicted = read_kitti(require_path("data.val_images", spec.data.val_images, "dir"), pred_dir, gt.classes,
                               dict(spec.data.target_class_mapping))
        by_path = {str(p.image): p for p in predicted.items}
        preds = []
        for item in gt.items:
            p = by_path.get(str(item.image))
            preds.append(p if p is not None and p.scores is not None else
                         ImageBoxes(image=item.image, boxes=np.zeros((0, 4)), labels=np.zeros(0), scores=np.zeros(0)))
        metrics = self._score(spec, gt.items, preds, gt.classes, out_dir)
        metrics["model"] = {"predictions": str(pred_dir)}
        metrics["data_problems"] = {"val": gt.problems.as_dict(), "predictions": predicted.problems.as_dict()}
        return metrics

    # -- inference -----------------------------------------------------------------------------
    def inference(self, spec: DetectNetSpec, predictor: Predictor, out_dir: Path) -> dict:
        from ...data.convert import write_kitti
        from ...data.detection_data import DetectionImages, collate_detection

        meta = predictor.meta
        _, _, cluster = configs(spec, meta["classes"])
        paths = collect_images(spec.inference.images)
        items = [ImageBoxes(image=p, boxes=np.zeros((0, 4)), labels=np.zeros(0)) for p in paths]
        dataset = DetectionImages(items, meta["image_width"], meta["image_height"], meta["mean"], meta["std"], None,
                                  spec.data.max_image_pixels)
        loader = torch.utils.data.DataLoader(dataset, batch_size=spec.inference.batch_size,
                                             collate_fn=collate_detection)
        classes = meta["classes"]
        results, bad, records = [], {}, []
        for images, targets, skipped in loader:
            for path, reason in parse_skipped(skipped).items():
                bad[path] = reason
                log.warning("skipped %s", reason)
            if not targets:
                continue
            for target, pred in zip(targets, predict_boxes(predictor(images), targets, cluster, meta)):
                keep = pred.scores >= spec.inference.score_threshold
                ow, oh = target.original_size
                sx, sy = ow / target.width, oh / target.height
                boxes = pred.boxes[keep] * np.array([sx, sy, sx, sy], dtype=np.float32)
                final = ImageBoxes(image=target.image, boxes=boxes, labels=pred.labels[keep],
                                   scores=pred.scores[keep], width=ow, height=oh)
                results.append(final)
                records.append({"image": str(target.image), "detections": [
                    {"class": classes[int(c)], "score": round(float(s), 4), "box": [round(float(v), 2) for v in b]}
                    for b, c, s in zip(final.boxes, final.labels, final.scores)]})
                if spec.inference.annotate:
                    import io

                    picture = draw_boxes(load_image(target.image, spec.data.max_image_pixels), final.boxes,
                                         final.labels, classes, final.scores)
                    buf = io.BytesIO()
                    picture.save(buf, format="PNG")
                    atomic_write_bytes(out_dir / "annotated" / f"{Path(target.image).stem}.png", buf.getvalue())
        write_kitti(DetectionDataset(classes=classes, items=results), out_dir / "labels")
        atomic_write_json(out_dir / "detections.json", records)
        return {"images": len(results), "detections": sum(len(r.boxes) for r in results),
                "skipped_images": {"count": len(bad), "files": bad},
                "labels": str(out_dir / "labels"), "model": {"file": str(predictor.source), "runtime": predictor.kind}}

    # -- dataset_convert -----------------------------------------------------------------------
    def dataset_convert(self, spec: DetectNetSpec, results: Path | None, model=None) -> dict:
        from ...data.convert import convert_dataset, format_report

        d, c = spec.data, spec.dataset_convert
        out = c.output_dir or (results / "converted" if results else None)
        if out is None:
            raise SpecError("dataset_convert needs dataset_convert.output_dir=DIR (or -r DIR)")
        labels = require_path("data.train_labels", d.train_labels, "file" if d.format == "coco" else "dir")
        report = convert_dataset(d.format, require_path("data.train_images", d.train_images, "dir"), labels,
                                 c.output_format, out, names=d.yolo_names, classes=d.classes,
                                 class_mapping=dict(d.target_class_mapping), val_split=c.val_split,
                                 split_mode=c.split_mode, seed=spec.train.seed)
        print(format_report(report))
        return report


TASK = DetectNetV2Task()
