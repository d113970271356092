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
from ...zoo.families import get_family
from ...zoo.registry import get_image_entry
from ...zoo.sources import find_weights
from . import classic, onnx_backbone, timm_backbone  # noqa: F401  (each registers its families)
from .base import Backbone, PretrainedInfo
from .onnx_backbone import OnnxSegmenter, build_onnx_segmenter

__all__ = ["Backbone", "OnnxSegmenter", "PretrainedInfo", "build_backbone", "build_onnx_segmenter"]


def build_backbone(name: str, pretrained: bool | str | os.PathLike = True, out_stride: int | None = None) -> Backbone:
    """Build zoo model `name` as a Backbone, with the builder its family registered.

    pretrained: True loads the zoo's checksum-verified weights (cache, imported file, installed
    package, then network); a path loads that state dict file instead (every backbone tensor must
    fit); False keeps random initialisation.
    out_stride: drop the stages deeper than this stride (no dilation), e.g. 16 for DetectNet_v2.
    """
    entry = get_image_entry(name)
    build = get_family(entry.family, model=name)
    weights: Path | None = None
    source: str | None = None
    if pretrained is True:
        found = find_weights(entry)
        weights, source = found.path, found.source
    elif pretrained is not False and pretrained is not None:
        weights, source = Path(pretrained).expanduser(), "file"
        if not weights.is_file():
            raise ModelError(f"pretrained weight file {weights} does not exist")
    return build(entry, weights, source, out_stride)
