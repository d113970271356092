"""DetectNet_v2: TAO's grid detector (coverage + bbox heads on a stride-16 backbone, box clustering)."""
from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from ...data.boxes import ImageBoxes
from ...data.detection_data import DetectionData
from ...engine.checkpoint import read_checkpoint
from ...errors import SpecError
from ...optimize.prune import apply_layer_shapes
from ...spec import require_path
from ...zoo import get_entry
from ..base import Predictor
from ..detection import DetectionTask
from .model import DetectNetV2, build_detectnet_v2, check_input_size
from .module import DetectNetModule, configs, predict_boxes
from .spec import DetectNetSpec

log = logging.getLogger("transferkit")


class DetectNetV2Task(DetectionTask):
    name = "detectnet_v2"
    spec_class = DetectNetSpec
    output_names = ("coverage", "bbox")
    description = "object detection, TAO's DetectNet_v2 grid detector (KITTI / COCO / YOLO labels)"

    @property
    def extra_verbs(self):
        return {"dataset_convert": self.dataset_convert}

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

    def predict(self, spec: DetectNetSpec, predictor: Predictor, images, targets) -> list[ImageBoxes]:
        _, _, cluster = configs(spec, predictor.meta["classes"])
        return predict_boxes(predictor(images), targets, cluster, predictor.meta)

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
