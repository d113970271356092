"""DetectNet_v2 training: rasterised coverage/bbox targets, TAO's loss, val mAP after clustering."""
from __future__ import annotations

import torch

from ....vision.boxes import ImageBoxes
from ....errors import SpecError
from ....spec import SpecModel, TrainConfig
from ..base import DetectionModule
from .loss import detectnet_loss
from .postprocess import detections_from_outputs
from .spec import ClusterSettings, DetectNetSpec, LossConfig, PostprocessConfig, TargetSettings, TargetsConfig
from .targets import rasterise

STRIDE = 16


def _per_class(section: TargetsConfig | PostprocessConfig, settings: type[SpecModel], classes: list[str],
               key: str) -> list:
    """One `settings` per class: the section's values, with that class's `per_class` overrides applied.

    The overrides' keys and values were checked with the spec (spec.overrides_of); only their class
    names can be checked here."""
    base = section.model_dump(exclude={"per_class"})
    overrides = {name.lower(): values.model_dump() for name, values in section.per_class.items()}
    unknown = [name for name in overrides if name not in [c.lower() for c in classes]]
    if unknown:
        raise SpecError(f"{key}.per_class names unknown class(es) {unknown}; classes are {classes}")
    return [settings.model_validate({**base, **overrides.get(c.lower(), {})}) for c in classes]


def configs(spec: DetectNetSpec, classes: list[str]) -> tuple[list[TargetSettings], LossConfig, list[ClusterSettings]]:
    """The spec's targets / loss / postprocess sections as the runtime uses them: per class where they have
    `per_class` overrides."""
    weights = spec.loss.class_weights
    if weights is not None and len(weights) != len(classes):
        raise SpecError(f"loss.class_weights has {len(weights)} values for {len(classes)} classes {classes}; "
                        f"give one weight per class, in that order")
    return (_per_class(spec.targets, TargetSettings, classes, "targets"), spec.loss,
            _per_class(spec.postprocess, ClusterSettings, classes, "postprocess"))


def predict_boxes(outputs, targets: list[ImageBoxes], cluster: list[ClusterSettings], meta: dict) -> list[ImageBoxes]:
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
