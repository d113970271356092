"""Backbones with one interface: image batch -> feature maps at known strides and channel counts.

    backbone = build_backbone("mobilenet_v2")            # ImageNet weights, found offline if installed
    maps = backbone(images)                              # one map per stage, stage 0 = stem
    backbone.channels, backbone.strides                  # e.g. [16, 24, 32, 96, 1280], [2, 4, 8, 16, 32]
    backbone.freeze([0, 1], freeze_bn=True)              # TAO's freeze_blocks / freeze_bn
"""
from __future__ import annotations

import os
from pathlib import Path

from ...errors import ModelError
from ...zoo.registry import get_entry
from ...zoo.sources import find_weights
from .base import Backbone, PretrainedInfo

__all__ = ["Backbone", "PretrainedInfo", "build_backbone"]


def build_backbone(name: str, pretrained: bool | str | os.PathLike = True, out_stride: int | None = None) -> Backbone:
    """Build zoo model `name` as a Backbone.

    pretrained: True loads the zoo's checksum-verified weights (cache, imported file, installed
    package, then network); a path loads that state dict file instead (every backbone tensor must
    fit); False keeps random initialisation.
    out_stride: drop the stages deeper than this stride (no dilation), e.g. 16 for DetectNet_v2.
    """
    entry = get_entry(name)
    weights: Path | None = None
    source: str | None = None
    if pretrained is True:
        found = find_weights(entry)
        weights, source = found.path, found.source
    elif pretrained is not False and pretrained is not None:
        if entry.family == "onnx":
            raise ModelError(f"{name!r} is an imported ONNX model and carries its own weights: use pretrained=True")
        weights, source = Path(pretrained).expanduser(), "file"
        if not weights.is_file():
            raise ModelError(f"pretrained weight file {weights} does not exist")

    if entry.family in ("torchvision", "efficientnet_lite"):
        from .classic import build_classic_backbone

        return build_classic_backbone(entry, weights, source, out_stride)
    if entry.family == "timm":
        from .timm_backbone import build_timm_backbone

        return build_timm_backbone(entry, weights, source, out_stride)
    if entry.family == "onnx":
        from .onnx_backbone import build_onnx_backbone

        if weights is None:  # random init still needs the graph
            found = find_weights(entry)
            return build_onnx_backbone(entry, found.path, found.source, out_stride, random_init=True)
        return build_onnx_backbone(entry, weights, source or "onnx import", out_stride, random_init=False)
    raise ModelError(f"model {name!r} has family {entry.family!r}, which no backbone builder handles")
