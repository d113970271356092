"""Top-down heatmap network: a zoo backbone's deepest map, 2x upsampling stages, one heatmap per keypoint.

With the usual stride-32 backbone and three stages the heatmaps are at stride 4 (SimpleBaseline's
layout); `forward` returns them, [N, K, H/stride, W/stride], which is also the exported ONNX output
unless `export.output=keypoints` puts the decoding in the graph (`DecodedKeypoints`).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ...engine.checkpoint import LoadReport, read_checkpoint, strip_prefix, transfer_weights
from ...errors import ModelError
from ...vision.backbones import Backbone, build_backbone

log = logging.getLogger("transferkit")


class DeconvStage(nn.Sequential):
    """ConvTranspose 4x4 stride 2 (exactly doubles the map), BN, ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class ResizeStage(nn.Sequential):
    """Nearest-neighbour 2x resize, then Conv 3x3, BN, ReLU ("resize-convolution": no checkerboard pattern, and
    every layer quantises to INT8, where ONNX Runtime's int8 ConvTranspose is slower than its float one)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


UPSAMPLE_STAGES = {"deconv": DeconvStage, "resize": ResizeStage}


class PoseNet(nn.Module):
    """Backbone -> upsampling head -> `num_keypoints` heatmaps. `final` is the output layer (never pruned).
    `upsample`: each head stage is a 4x4 stride-2 transposed convolution ("deconv", SimpleBaseline's) or a 2x
    nearest resize followed by a 3x3 convolution ("resize")."""

    def __init__(self, backbone: Backbone, num_keypoints: int, deconv_channels: Sequence[int], upsample: str = "deconv"):
        super().__init__()
        if upsample not in UPSAMPLE_STAGES:
            raise ModelError(f"unknown upsampling {upsample!r}: use one of {', '.join(UPSAMPLE_STAGES)}")
        if num_keypoints < 1:
            raise ModelError(f"a keypoint model needs at least one keypoint, got {num_keypoints}")
        if backbone.strides[-1] is None:
            raise ModelError(f"backbone {backbone.name!r} ends in a pooled vector, not a feature map; a keypoint "
                             "model needs spatial maps")
        self.backbone = backbone
        stages, cin = [], backbone.channels[-1]
        for width in deconv_channels:
            stages.append(UPSAMPLE_STAGES[upsample](cin, int(width)))
            cin = int(width)
        self.head = nn.Sequential(*stages)
        self.final = nn.Conv2d(cin, num_keypoints, 1)
        # Near-zero heatmaps at the start (SimpleBaseline's init): the loss then starts at the targets' own scale
        # instead of a random head's, and the first epochs are not spent shrinking it.
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)
        self.stride = int(backbone.strides[-1]) // 2 ** len(deconv_channels)
        if self.stride < 1:
            raise ModelError(f"{len(deconv_channels)} 2x stages upsample past the input size of backbone "
                             f"{backbone.name!r} (deepest stride {backbone.strides[-1]}); use fewer")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.final(self.head(self.backbone(images)[-1]))


def build_pose_net(backbone: str, num_keypoints: int, deconv_channels: Sequence[int],
                   pretrained: bool | str | os.PathLike = True, freeze_blocks: Sequence[int] = (),
                   freeze_bn: bool = False, upsample: str = "deconv") -> tuple[PoseNet, LoadReport | None]:
    """A PoseNet on zoo backbone `backbone`, and what happened to its weights.

    pretrained: True (zoo ImageNet weights), False, a backbone state-dict `.pth`, or a transferkit
    `.ckpt` of any task whose tensors that match by name and shape are copied in. None when nothing loaded.
    """
    ckpt = Path(pretrained) if isinstance(pretrained, (str, os.PathLike)) and str(pretrained).endswith(".ckpt") else None
    if ckpt is not None and not ckpt.is_file():
        raise ModelError(f"model.pretrained: checkpoint {ckpt} does not exist")
    body = build_backbone(backbone, pretrained=False if ckpt is not None else pretrained)
    net = PoseNet(body, num_keypoints, deconv_channels, upsample)
    if ckpt is not None:
        _, state = read_checkpoint(ckpt)
        report = transfer_weights(net, strip_prefix(state, "net."), str(ckpt))
    else:
        report = LoadReport.backbone_only(net, "new keypoint head")
    net.backbone.freeze(list(freeze_blocks), freeze_bn)
    return net, report


class DecodedKeypoints(nn.Module):
    """The exported graph of `export.output=keypoints`: crops -> (keypoints [N, K, 2] in crop pixels, scores [N, K])."""

    def __init__(self, net: nn.Module, input_size: tuple[int, int], method: str = "dark"):
        super().__init__()
        self.net, self.input_size, self.method = net, tuple(input_size), method

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from .codec import decode_heatmaps

        return decode_heatmaps(self.net(images), self.input_size, method=self.method)
