"""YOLOv4-tiny training and the one post-processing path shared by validation, evaluate and inference."""
from __future__ import annotations

import numpy as np
import torch

from ....vision.boxes import ImageBoxes
from ....engine.meta import ModelMeta
from ....spec import TrainConfig
from ..base import DetectionModule
from .decode import decode_outputs, nms_per_class
from .loss import yolo_loss
from .model import STRIDES

DETECTION_COLUMNS = 7  # rows of the NMS export: batch index, x1, y1, x2, y2, score, class


def anchors_of(meta: ModelMeta) -> torch.Tensor:
    """[levels, anchors, 2] in the order of the network's outputs (stride 32 big, stride 16 mid)."""
    return torch.tensor([meta.arch["big_anchor_shape"], meta.arch["mid_anchor_shape"]], dtype=torch.float32)


def detections_from_outputs(outputs, meta: ModelMeta, nms, batch: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per image (boxes, scores, labels), from raw heads (decoded + NMS here) or from the NMS export's rows."""
    if len(outputs) == 1 and outputs[0].ndim == 2 and outputs[0].shape[-1] == DETECTION_COLUMNS:
        return rows_to_detections(outputs[0], batch, nms.top_k)
    boxes, objectness, class_probs = decode_outputs(outputs, anchors_of(meta).to(outputs[0].device), STRIDES,
                                                    meta.arch["grid_xy_extend"])
    scores = objectness.unsqueeze(-1) * class_probs
    return nms_per_class(boxes, scores, nms.confidence_threshold, nms.iou_threshold, nms.top_k)


def rows_to_detections(rows: torch.Tensor, batch: int, top_k: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The NMS export's [K, 7] rows -> per image (boxes, scores, labels), best first, at most top_k."""
    out = []
    for b in range(batch):
        mine = rows[rows[:, 0].long() == b]
        order = torch.argsort(mine[:, 5], descending=True, stable=True)[:top_k]
        mine = mine[order]
        out.append((mine[:, 1:5], mine[:, 5], mine[:, 6].long()))
    return out


def as_image_boxes(detections, targets: list[ImageBoxes]) -> list[ImageBoxes]:
    return [ImageBoxes(image=t.image, boxes=b.detach().cpu().numpy(), labels=c.cpu().numpy(),
                       scores=s.detach().float().cpu().numpy(), width=t.width, height=t.height)
            for (b, s, c), t in zip(detections, targets)]


def ground_truth(targets: list[ImageBoxes], device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.as_tensor(np.asarray(t.boxes, np.float32), device=device),
             torch.as_tensor(np.asarray(t.labels, np.int64), device=device)) for t in targets]


class YoloModule(DetectionModule):
    def __init__(self, net, meta: ModelMeta, train: TrainConfig, spec):
        super().__init__(net, meta, train, spec.evaluation)
        self.loss_cfg = spec.loss
        self.nms = spec.nms
        self.register_buffer("anchors", anchors_of(meta), persistent=False)

    def compute_losses(self, outputs, targets: list[ImageBoxes]) -> dict[str, torch.Tensor]:
        losses = yolo_loss(outputs, ground_truth(targets, self.device), self.anchors, STRIDES,
                           len(self.meta.classes), self.loss_cfg, self.meta.arch["grid_xy_extend"])
        return {k: losses[k] for k in ("total", "box", "obj", "cls")}

    def predict_outputs(self, outputs, targets: list[ImageBoxes]) -> list[ImageBoxes]:
        return as_image_boxes(detections_from_outputs([o.float() for o in outputs], self.meta, self.nms, len(targets)), targets)
