"""DetectNet_v2 training: rasterised coverage/bbox targets, TAO's loss, val mAP after clustering."""
from __future__ import annotations

import numpy as np
import torch

from ...data.boxes import ImageBoxes
from ...data.draw import boxes_grid
from ...engine.module import TaskModule
from ...metrics import evaluate_detections
from ...errors import SpecError, first_line
from ...spec import TrainConfig
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
    detections = detections_from_outputs(cov_logits, bbox, STRIDE, cluster, meta["bbox_scale"], meta["bbox_offset"])
    return [d.as_image_boxes(t.image, t.width, t.height) for d, t in zip(detections, targets)]


class DetectNetModule(TaskModule):
    def __init__(self, net, meta: dict, train: TrainConfig, spec):
        super().__init__(net, meta, train)
        self.target_cfg, self.loss_cfg, self.cluster_cfg = configs(spec, meta["classes"])
        self.evaluation = spec.evaluation
        self._gt: list[ImageBoxes] = []
        self._pred: list[ImageBoxes] = []
        self._grid = None

    def _targets(self, targets: list[ImageBoxes], out_h: int, out_w: int) -> dict[str, torch.Tensor]:
        maps = [rasterise(t.boxes, t.labels, len(self.meta["classes"]), out_h, out_w, STRIDE, self.target_cfg,
                          ignore=t.ignore, bbox_scale=self.meta["bbox_scale"], bbox_offset=self.meta["bbox_offset"])
                for t in targets]
        return {k: torch.stack([m[k] for m in maps]).to(self.device) for k in maps[0]}

    def _step(self, batch, stage: str):
        images, targets, bad = batch
        self.note_skipped(bad)
        if not targets:
            return None, None
        outputs = self(self.prepare_images(images))
        out_h, out_w = outputs[0].shape[-2:]
        losses = detectnet_loss(outputs, self._targets(targets, out_h, out_w), self.loss_cfg)
        n = len(targets)
        self.log(f"{stage}/loss", losses["total"], on_step=stage == "train", on_epoch=True, prog_bar=True, batch_size=n,
                 sync_dist=stage == "val")
        self.log(f"{stage}/coverage_loss", losses["coverage"], on_epoch=True, batch_size=n, sync_dist=stage == "val")
        self.log(f"{stage}/bbox_loss", losses["bbox"], on_epoch=True, batch_size=n, sync_dist=stage == "val")
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
        preds = predict_boxes(outputs, targets, self.cluster_cfg, self.meta)
        self._gt.extend(targets)
        self._pred.extend(preds)
        if self._grid is None and self.tensorboard is not None:
            self._grid = (batch[0][:8].float().cpu(), targets[:8], preds[:8])

    def on_validation_epoch_end(self) -> None:
        if not self._gt or self.trainer.sanity_checking:
            return
        classes = self.meta["classes"]
        result = evaluate_detections(self._gt, self._pred, classes, self.evaluation.iou_thresholds, self.evaluation.mode)
        # In DDP each rank scores its shard; the logged value is their mean (rank 0's files hold the rest).
        self.log("val/mAP", float(result["mAP"] or 0.0), prog_bar=True, sync_dist=True)
        for name, ap in result["AP_per_class"].items():
            if ap is not None:
                self.log(f"val/AP/{name}", float(ap), sync_dist=True)
        writer = self.tensorboard
        if writer is not None and self._grid is not None:
            images, targets, preds = self._grid
            pictures = [_to_pil(img, self.meta["mean"], self.meta["std"]) for img in images]
            grid = boxes_grid(pictures, classes, predictions=preds, ground_truth=targets, cell_size=256)
            writer.add_image("val/predictions", grid, self.current_epoch)


def _to_pil(image: torch.Tensor, mean, std):
    from PIL import Image

    mean_t = torch.tensor(mean).view(3, 1, 1)
    std_t = torch.tensor(std).view(3, 1, 1)
    arr = ((image * std_t + mean_t).clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    return Image.fromarray(arr)
