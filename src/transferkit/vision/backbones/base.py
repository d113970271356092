"""The one backbone interface every task builds on: image batch -> feature maps at known strides."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ...errors import ModelError


@dataclass
class PretrainedInfo:
    """Where a backbone's weights came from, and the pretrained classifier a task may reuse."""

    source: str  # "cache", "imported", "package", "network", "file", "onnx import", ...
    path: Path | None
    tensors_loaded: int
    # The ImageNet classifier dropped from the backbone: {"weight": [K, D], "bias": [K]}, with
    # D possibly != num_features (VGG's classifier sits behind two 4096-wide layers). None if absent.
    classifier: dict[str, torch.Tensor] | None = None
    categories: tuple[str, ...] | None = None
    notes: list[str] = field(default_factory=list)


class Backbone(nn.Module):
    """A feature extractor cut into stages; stage 0 is the stem.

    forward(x) returns one feature map per stage; `strides[i]` is the cumulative output stride of
    stage i and `channels[i]` its channel count. A backbone imported from ONNX may end in a pooled
    [N, C] vector instead of a map: then its last stride is None.
    """

    def __init__(self, stages: Sequence[nn.Module], channels: Sequence[int], strides: Sequence[int | None], name: str = ""):
        super().__init__()
        if not (len(stages) == len(channels) == len(strides)) or not stages:
            raise ValueError("a backbone needs one channel count and one stride per stage, and at least one stage")
        self.stages = nn.ModuleList(stages)
        self.channels = list(channels)
        self.strides = list(strides)
        self.name = name
        self.frozen_stages: list[int] = []
        self.bn_frozen = False
        self.pretrained_info: PretrainedInfo | None = None

    @property
    def num_features(self) -> int:
        return self.channels[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x

    def freeze(self, blocks: Sequence[int] = (), freeze_bn: bool = False) -> "Backbone":
        """TAO's freeze_blocks / freeze_bn: stop training the given stages, and/or all BatchNorm statistics.

        Frozen stages keep requires_grad=False. With freeze_bn every BatchNorm stays in eval mode
        (running statistics fixed) through later .train() calls; its affine weights still train
        unless their stage is frozen too.
        """
        for index in blocks:
            if not -len(self.stages) <= index < len(self.stages):
                raise ModelError(
                    f"freeze_blocks index {index} is out of range: backbone {self.name!r} has stages 0..{len(self.stages) - 1}"
                )
            for param in self.stages[index].parameters():
                param.requires_grad_(False)
        self.frozen_stages = sorted({i % len(self.stages) for i in blocks} | set(self.frozen_stages))
        self.bn_frozen = self.bn_frozen or freeze_bn
        self.train(self.training)
        return self

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode)
        if self.bn_frozen:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self


def trace_strides(layers: Sequence[nn.Module], image_size: int = 64) -> tuple[list[int], list[int]]:
    """Run a dummy image through `layers` in order; (cumulative stride, channels) after each layer."""
    strides, channels = [], []
    modes = [m.training for m in layers]
    x = torch.zeros(1, 3, image_size, image_size)
    try:
        with torch.no_grad():
            for layer in layers:
                layer.eval()
                x = layer(x)
                strides.append(image_size // x.shape[-1])
                channels.append(x.shape[1])
    finally:
        for layer, mode in zip(layers, modes):
            layer.train(mode)
    return strides, channels


def split_by_stride(layers: Sequence[nn.Module], image_size: int = 64) -> tuple[list[nn.Module], list[int], list[int]]:
    """Group sequential layers into stages: a layer that increases the output stride starts a new stage.

    Returns (stages, channels, strides) with each stage an nn.Sequential of the original layers.
    """
    strides, channels = trace_strides(layers, image_size)
    groups: list[list[nn.Module]] = []
    stage_strides: list[int] = []
    stage_channels: list[int] = []
    previous = 1
    for layer, stride, chans in zip(layers, strides, channels):
        if not groups or stride > previous:
            groups.append([])
            stage_strides.append(stride)
            stage_channels.append(chans)
        groups[-1].append(layer)
        stage_channels[-1] = chans
        previous = stride
    return [nn.Sequential(*g) for g in groups], stage_channels, stage_strides


def limit_stride(
    stages: list[nn.Module], channels: list[int], strides: list[int], out_stride: int | None, name: str
) -> tuple[list[nn.Module], list[int], list[int]]:
    """Drop the stages whose output stride exceeds `out_stride` (no dilation: the deep stages go away)."""
    if out_stride is None:
        return stages, channels, strides
    keep = [i for i, s in enumerate(strides) if s <= out_stride]
    if out_stride not in strides:
        raise ModelError(
            f"out_stride {out_stride} is not available for backbone {name!r}: its stages have strides {strides}"
        )
    return [stages[i] for i in keep], [channels[i] for i in keep], [strides[i] for i in keep]
