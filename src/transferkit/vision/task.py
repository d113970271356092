"""What every image task adds to the core Task and TaskModule: channels_last layouts and image metadata."""
from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from torch import nn

from ..engine.meta import ModelMeta
from ..engine.module import TaskModule
from ..tasks.base import Task
from .spec import VisionTrainConfig

log = logging.getLogger("transferkit")


class VisionTask(Task):
    """A task whose model takes one normalised image batch [N, 3, H, W]."""

    item_kind = "images"

    def eager_runner(self, net: nn.Module, device: str) -> Callable[..., Any]:
        """Runs a BatchNorm-folded copy of `net` (made on the first batch; `net` itself is left as is),
        channels_last: NHWC is faster for convolutions on the CPU, and at batch 1 a BatchNorm costs
        about as much as the convolution before it (optimize/fuse.py has the numbers)."""
        from ..optimize.fuse import fold_batchnorm

        ready: list[nn.Module] = []

        def run(images: torch.Tensor) -> Any:
            x = images.to(device).contiguous(memory_format=torch.channels_last)
            if not ready:
                folded, _count = fold_batchnorm(net, x)
                ready.append(folded.to(memory_format=torch.channels_last))
            return ready[0](x)

        return run

    def spec_for_model(self, spec, meta: ModelMeta):
        """data.image_width / data.image_height set to the model's input size (tasks with a square
        data.image_size override this)."""
        size = {"image_width": meta.image.width, "image_height": meta.image.height}
        if all(getattr(spec.data, k) == v for k, v in size.items()):
            return spec
        log.info("using the model's input size %dx%d", meta.image.width, meta.image.height)
        return spec.model_copy(update={"data": spec.data.model_copy(update=size)})

    def onnx_metadata(self, meta: ModelMeta) -> dict[str, Any]:
        image = meta.image
        return {"mean": list(image.mean), "std": list(image.std), "input_size": [image.channels, image.height, image.width]}


class VisionModule(TaskModule):
    """A TaskModule whose network trains on image batches, channels_last when `train.channels_last`."""

    def __init__(self, net: nn.Module, meta: ModelMeta, train: VisionTrainConfig):
        super().__init__(net, meta, train)
        if train.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.train_cfg.channels_last else images
