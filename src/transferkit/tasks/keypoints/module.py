"""Keypoint training (weighted heatmap MSE), validation OKS AP, and the crop -> image-keypoints decoding every
verb shares (the same code whether the outputs are eager heatmaps, ONNX heatmaps or ONNX decoded keypoints)."""
from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np
import torch

from ...engine.meta import ModelMeta
from ...vision.task import VisionModule
from .codec import decode_heatmaps
from .spec import KpTrainConfig

log = logging.getLogger("transferkit")

SCORE_FLOOR = 0.2  # keypoints scored above this make up an object's score (the usual top-down rescoring)


def heatmap_loss(predicted: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean squared error per heatmap pixel, keypoints with weight 0 (unlabelled, outside the crop) left out."""
    per_pixel = (predicted.float() - target) ** 2 * weights[:, :, None, None]
    return per_pixel.mean() * 0.5


def swap_pairs(values: torch.Tensor, pairs: Sequence[Sequence[int]], dim: int = 1) -> torch.Tensor:
    """`values` with the left/right keypoints of each pair exchanged along `dim`."""
    order = list(range(values.shape[dim]))
    for a, b in pairs:
        order[a], order[b] = order[b], order[a]
    return values.index_select(dim, torch.tensor(order, device=values.device))


def crop_keypoints(run: Callable[[torch.Tensor], list[torch.Tensor]], images: torch.Tensor, meta: ModelMeta,
                   decode: str = "dark", flip_test: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(xy [N, K, 2] in crop pixels, score [N, K]) of a crop batch; `run` returns the model's outputs.

    A model exported with `export.output=keypoints` returns decoded points (its own decoding); otherwise
    heatmaps are decoded here. Flip test averages with the mirrored crop: heatmaps before decoding,
    decoded points after mirroring them back."""
    pairs = [tuple(p) for p in meta.arch.get("flip_pairs", [])]
    width, height = meta.image.width, meta.image.height

    def once(batch: torch.Tensor):
        out = run(batch)
        if len(out) >= 2:  # decoded in the graph
            return None, out[0].float(), out[1].float()
        return out[0].float(), None, None

    heatmaps, xy, score = once(images)
    if flip_test:
        f_heat, f_xy, f_score = once(images.flip(-1))
        if heatmaps is not None:
            heatmaps = (heatmaps + swap_pairs(f_heat.flip(-1), pairs)) / 2
        else:
            f_xy = f_xy.clone()
            f_xy[..., 0] = width - 1 - f_xy[..., 0]
            xy = (xy + swap_pairs(f_xy, pairs)) / 2
            score = (score + swap_pairs(f_score, pairs)) / 2
    if heatmaps is not None:
        xy, score = decode_heatmaps(heatmaps, (width, height), method=decode)
    return xy.float(), score.float()


def to_image(xy: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Crop pixels -> image pixels through each crop's inverse affine [N, 2, 3]."""
    inverse = inverse.to(xy.dtype)
    return xy @ inverse[:, :, :2].transpose(1, 2) + inverse[:, None, :, 2]


def coco_result(image_id: int, category_id: int, xy: np.ndarray, score: np.ndarray, box_score: float = 1.0) -> dict:
    """One COCO keypoint result: keypoints [x, y, score]*K and the object's score (box x mean confident keypoint)."""
    confident = score[score > SCORE_FLOOR]
    object_score = float(confident.mean()) if confident.size else 0.0
    flat = np.concatenate([xy, score[:, None]], axis=1).astype(np.float64)
    return {"image_id": int(image_id), "category_id": int(category_id),
            "keypoints": [round(float(v), 3) for v in flat.flatten()], "score": round(object_score * box_score, 5)}


class KeypointModule(VisionModule):
    def __init__(self, net, meta: ModelMeta, train: KpTrainConfig, data, decode: str = "dark"):
        super().__init__(net, meta, train)
        self.data = data  # ground truth for val AP (read at each validation epoch's end)
        self.decode = decode
        self._results: list[dict] = []
        self._seen: list = []

    def _step(self, batch, stage: str):
        images, heatmaps, weights, inverse, index, bad = batch
        self.note_skipped(bad)
        if images is None or len(images) == 0:
            return None, None
        outputs = self(self.prepare_images(images))
        loss = heatmap_loss(outputs, heatmaps, weights)
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True,
                 batch_size=len(images), sync_dist=stage == "val")
        return loss, outputs

    def training_step(self, batch, batch_idx):
        loss, _ = self._step(batch, "train")
        return loss

    def on_validation_epoch_start(self) -> None:
        self._results, self._seen = [], []

    def validation_step(self, batch, batch_idx):
        _, outputs = self._step(batch, "val")
        if outputs is None:
            return
        inverse, index = batch[3], batch[4]
        xy, score = decode_heatmaps(outputs.float(), (self.meta.image.width, self.meta.image.height),
                                    method=self.decode)
        points = to_image(xy, inverse.to(xy.device)).cpu().numpy()
        score = score.cpu().numpy()
        items = self.data.val_items
        for row, i in enumerate(index.tolist()):
            item = items[i]
            self._seen.append(item)
            self._results.append(coco_result(item.image_id, self.meta.arch["category_id"], points[row], score[row]))

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self._seen:
            return
        from ...metrics.keypoints import oks_evaluate

        result = oks_evaluate(self.data.ground_truth(self._seen), self._results, self.data.sigmas)
        # In DDP each rank scores its shard; the logged value is their mean.
        for key in ("AP", "AP50", "AP75", "AR"):
            self.log(f"val/{key}", float(result[key] or 0.0), prog_bar=key == "AP", sync_dist=True)
