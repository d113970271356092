"""DetectNet_v2: TAO's grid detector (coverage + bbox heads on a stride-16 backbone, box clustering)."""
from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from ....vision.boxes import ImageBoxes
from ....errors import SpecError
from ....spec import require_path
from ....engine.meta import ModelMeta
from ...base import Predictor
from ..base import DetectionTask
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

    module_class = DetectNetModule

    def check_input(self, spec: DetectNetSpec) -> None:
        check_input_size(spec.data.image_width, spec.data.image_height)

    def arch(self, spec: DetectNetSpec) -> dict:
        return {"bbox_scale": spec.model.bbox_scale, "bbox_offset": spec.model.bbox_offset}

    def network(self, meta: ModelMeta, pretrained, freeze_blocks=(), freeze_bn: bool = False) -> DetectNetV2:
        return build_detectnet_v2(meta.backbone, len(meta.classes), pretrained, freeze_blocks, freeze_bn)

    def prune_ignored_layers(self, net: DetectNetV2) -> list[nn.Module]:
        return [m for name, m in net.named_modules() if not name.startswith("backbone.") and isinstance(m, nn.Conv2d)]

    def predict(self, spec: DetectNetSpec, predictor: Predictor, images, targets) -> list[ImageBoxes]:
        _, _, cluster = configs(spec, list(predictor.meta.classes))
        return predict_boxes(predictor(images), targets, cluster, predictor.meta)

    # -- dataset_convert -----------------------------------------------------------------------
    def dataset_convert(self, spec: DetectNetSpec, results: Path | None, model=None) -> dict:
        from ....vision.convert import convert_dataset, format_report

        d, c = spec.data, spec.dataset_convert
        out = c.output_dir or (results / "converted" if results else None)
        if out is None:
            raise SpecError("dataset_convert needs dataset_convert.output_dir=DIR (or -r DIR)")
        labels = require_path("data.train_labels", d.train_labels, "file" if d.format == "coco" else "dir")
        names = require_path("data.yolo_names", d.yolo_names, "file") if d.format == "yolo" else None
        report = convert_dataset(d.format, require_path("data.train_images", d.train_images, "dir"), labels,
                                 c.output_format, out, names=names, classes=d.classes,
                                 class_mapping=dict(d.target_class_mapping), val_split=c.val_split,
                                 split_mode=c.split_mode, seed=spec.train.seed)
        print(format_report(report))
        return report


TASK = DetectNetV2Task()
