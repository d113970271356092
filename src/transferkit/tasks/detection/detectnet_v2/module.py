"""DetectNet_v2 training: rasterised coverage/bbox targets, TAO's loss, val mAP after clustering."""
from __future__ import annotations

import torch

from ....vision.boxes import ImageBoxes
from ....errors import SpecError, first_line
from ....spec import TrainConfig
from ..base import DetectionModule
from .loss import LossConfig, detectnet_loss
from .postprocess import ClusterConfig, detections_from_outputs
from .targets import TargetConfig, rasterise

STRIDE = 16


def _per_class(section, cls, classes: list[str], key: str) -> list:
    """One config per class: the section's values, with that class's `per_class` overrides applied."""
    base = section.model_dump(exclude={"per_class"})
    overrides = {name.lower(): values for name, values in section.per_class.items()}
    unknown = [name for name in overrides if name not in [c.lower() for c in classes]]
    if unknown:
        raise SpecError(f"{key}.per_class names unknown class(es) {unknown}; classes are {classes}")
    try:
        return [cls(**{**base, **overrides.get(c.lower(), {})}) for c in classes]
    except TypeError as e:
        raise SpecError(f"{key}.per_class: {first_line(e)}; valid keys: {', '.join(base)}") from None


def configs(spec, classes: list[str]) -> tuple[list[TargetConfig], LossConfig, list[ClusterConfig]]:
    return (_per_class(spec.targets, TargetConfig, classes, "targets"), LossConfig(**spec.loss.model_dump()),
            _per_class(spec.postprocess, ClusterConfig, classes, "postprocess"))


def predict_boxes(outputs, targets: list[ImageBoxes], cluster: ClusterConfig, meta: dict) -> list[ImageBoxes]:
    """Raw outputs -> ImageBoxes predictions in the same (network-input) pixels as `targets`."""
    cov_logits, bbox = outputs[0], outputs[1]
    detections = detections_from_outputs(cov_logits, bbox, STRIDE, cluster, meta.arch["bbox_scale"], meta.arch["bbox_offset"])
    return [d.as_image_boxes(t.image, t.width, t.height) for d, t in zip(detections, targets)]


class DetectNetModule(DetectionModule):
    def __init__(self, net, meta: dict, train: TrainConfig, spec):
        super().__init__(net, meta, train, spec.evaluation)
        self.target_cfg, self.loss_cfg, self.cluster_cfg = configs(spec, list(meta.classes))

    def _targets(self, targets: list[ImageBoxes], out_h: int, out_w: int) -> dict[str, torch.Tensor]:
        maps = [rasterise(t.boxes, t.labels, len(self.meta.classes), out_h, out_w, STRIDE, self.target_cfg,
                          ignore=t.ignore, bbox_scale=self.meta.arch["bbox_scale"], bbox_offset=self.meta.arch["bbox_offset"])
                for t in targets]
        return {k: torch.stack([m[k] for m in maps]).to(self.device) for k in maps[0]}

    def compute_losses(self, outputs, targets: list[ImageBoxes]) -> dict[str, torch.Tensor]:
        out_h, out_w = outputs[0].shape[-2:]
        losses = detectnet_loss(outputs, self._targets(targets, out_h, out_w), self.loss_cfg)
        return {"total": losses["total"], "coverage": losses["coverage"], "bbox": losses["bbox"]}

    def predict_outputs(self, outputs, targets: list[ImageBoxes]) -> list[ImageBoxes]:
        return predict_boxes(outputs, targets, self.cluster_cfg, self.meta)
