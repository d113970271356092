"""YOLOv4-tiny: CSPDarknet-tiny (or any zoo backbone), two anchor heads, mosaic, NMS in the exported graph."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ....vision.boxes import ImageBoxes
from ..data import read_detection_split
from ....errors import SpecError
from ....io import atomic_write_text
from ....engine.meta import ModelMeta
from ...base import ExportGraph, Predictor
from ..base import DetectionTask
from .anchors import kmeans_anchors
from .export import check_detections, export_graph
from .model import CSPDARKNET, YoloV4Tiny, build_yolo_v4_tiny, check_input_size
from .module import YoloModule, as_image_boxes, detections_from_outputs
from .spec import YoloSpec

log = logging.getLogger("transferkit")


class YoloV4TinyTask(DetectionTask):
    name = "yolo_v4_tiny"
    spec_class = YoloSpec
    module_class = YoloModule
    output_names = ("big", "mid")
    description = "object detection, YOLOv4-tiny (anchors from k-means, mosaic, NMS inside the ONNX export)"

    @property
    def extra_verbs(self):
        return {"kmeans": self.kmeans}

    # -- model and data ------------------------------------------------------------------------
    def check_input(self, spec: YoloSpec) -> None:
        check_input_size(spec.data.image_width, spec.data.image_height)

    def normalisation(self, spec: YoloSpec) -> tuple[list[float], list[float]]:
        if spec.model.backbone == CSPDARKNET:  # darknet feeds pixels scaled to [0, 1]
            return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
        return super().normalisation(spec)

    def arch(self, spec: YoloSpec) -> dict:
        m = spec.model
        if m.backbone == CSPDARKNET and m.pretrained is True and not m.pruned:
            log.info("cspdarknet_tiny has no ImageNet weights in the zoo: training from scratch (give "
                     "model.pretrained=FILE, or model.backbone=mobilenet_v2 for ImageNet transfer)")
        return {"activation": m.activation, "big_anchor_shape": m.big_anchor_shape,
                "mid_anchor_shape": m.mid_anchor_shape, "grid_xy_extend": m.grid_xy_extend}

    def network(self, meta: ModelMeta, pretrained, freeze_blocks=(), freeze_bn: bool = False) -> YoloV4Tiny:
        if meta.backbone == CSPDARKNET and pretrained is True:
            pretrained = False
        return build_yolo_v4_tiny(meta.backbone, len(meta.classes), pretrained, meta.arch["activation"],
                                  freeze_blocks, freeze_bn)

    def prune_ignored_layers(self, net: YoloV4Tiny) -> list[nn.Module]:
        return [net.big_head, net.mid_head]

    # -- predictions ---------------------------------------------------------------------------
    def predict(self, spec: YoloSpec, predictor: Predictor, images, targets) -> list[ImageBoxes]:
        baked = predictor.meta.export.get("nms")
        if predictor.kind == "onnx" and baked and baked != spec.nms.model_dump() and not getattr(predictor, "_warned", 0):
            predictor._warned = 1
            log.warning("%s has NMS settings %s built in; the spec's nms section %s does not apply to it "
                        "(re-export to change them)", predictor.source, baked, spec.nms.model_dump())
        outputs = predictor(images)
        return as_image_boxes(detections_from_outputs(outputs, predictor.meta, spec.nms, len(targets)), targets)

    # -- export --------------------------------------------------------------------------------
    def export_graph(self, net: nn.Module, meta: ModelMeta, spec: YoloSpec) -> ExportGraph:
        return export_graph(net, meta, spec)

    def check_export(self, spec: YoloSpec, net: nn.Module, graph: ExportGraph, onnx_path: Path,
                     probe: tuple[torch.Tensor, ...]) -> dict:
        if graph.module is net:
            return super().check_export(spec, net, graph, onnx_path, probe)
        return check_detections(spec, net, onnx_path, probe[0], graph.module.meta, spec.export.parity_tolerance)

    # -- kmeans --------------------------------------------------------------------------------
    def kmeans(self, spec: YoloSpec, results: Path | None, model=None) -> dict:
        """TAO's `yolo_v4_tiny kmeans`: anchors from the training boxes' sizes at the network input size."""
        d, k = spec.data, spec.kmeans
        train = read_detection_split(d, "train", d.classes)
        if train is None:
            raise SpecError("kmeans reads the training labels: set data.train_images and data.train_labels")
        sizes = []
        for item in train.items:
            if len(item.boxes) and item.width and item.height:
                scale = np.array([d.image_width / item.width, d.image_height / item.height], np.float32)
                sizes.append((item.boxes[:, 2:] - item.boxes[:, :2]) * scale)
        wh = np.concatenate(sizes) if sizes else np.zeros((0, 2), np.float32)
        anchors, mean_iou = kmeans_anchors(wh, k.num_clusters, seed=spec.train.seed, n_init=k.restarts,
                                           max_iter=k.max_iter)
        rounded = [[round(float(w), 1), round(float(h), 1)] for w, h in anchors]
        report = {"anchors": rounded, "mean_iou": round(float(mean_iou), 4), "boxes": int(len(wh)),
                  "images": len(train.items), "input_size": [d.image_width, d.image_height]}
        lines = [f"# {len(wh)} boxes from {len(train.items)} images, scaled to {d.image_width}x{d.image_height}; "
                 f"mean IoU of each box with its best anchor: {mean_iou:.4f}"]
        if k.num_clusters == 6:
            report["mid_anchor_shape"], report["big_anchor_shape"] = rounded[:3], rounded[3:]
            lines += ["model:", f"  mid_anchor_shape: {rounded[:3]}", f"  big_anchor_shape: {rounded[3:]}"]
        else:
            lines += [f"anchors: {rounded}  # the model takes 6 (3 mid + 3 big): use kmeans.num_clusters=6"]
        text = "\n".join(lines) + "\n"
        out = Path(k.output) if k.output else (results / "anchors.yaml" if results else None)
        if out is not None:
            atomic_write_text(out, text)
            report["file"] = str(out)
        print(text, end="")
        if k.num_clusters == 6:
            compact = [str(part).replace(" ", "") for part in (rounded[:3], rounded[3:])]
            print(f"use them: model.mid_anchor_shape='{compact[0]}' model.big_anchor_shape='{compact[1]}'")
        return report


TASK = YoloV4TinyTask()
