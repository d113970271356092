"""YOLOv4-tiny: CSPDarknet-tiny (written here) or any zoo backbone, and the two-scale tiny neck/heads.

forward() returns the raw head outputs, which are also the raw-head ONNX export:
  [big: N x A(5+C) x H/32 x W/32 (the big anchors), mid: N x A(5+C) x H/16 x W/16 (the mid anchors)],
channels grouped per anchor as (tx, ty, tw, th, objectness, class logits...) -- see decode.py.
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import torch
from torch import nn

from ....vision.backbones import Backbone, build_backbone
from ....errors import ModelError, SpecError

CSPDARKNET = "cspdarknet_tiny"
STRIDES = (32, 16)
OBJECTNESS_PRIOR = 0.01  # initial objectness everywhere: the many empty cells do not swamp the first steps


def _activation(name: str) -> nn.Module:
    if name == "leaky_relu":
        return nn.LeakyReLU(0.1, inplace=True)
    if name == "mish":
        return nn.Mish(inplace=True)
    raise SpecError(f"model.activation: {name!r} is not supported; use leaky_relu or mish")


class ConvBNAct(nn.Sequential):
    """Darknet's [convolutional] block: conv (no bias), batch norm, activation."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, activation: str = "leaky_relu"):
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         _activation(activation))


class CSPTinyBlock(nn.Module):
    """One CSP block of CSPDarknet-tiny: a 3x3 conv, then half its channels go through two 3x3 convs whose
    outputs are joined by a 1x1 conv (`route`, darknet's layer the neck reads), then the block input and
    that route are concatenated and max-pooled. forward returns (pooled output, route).

    Darknet's first 3x3 conv is held as two convs of half the channels each (`conv_a`, `conv_b`), whose
    concatenation equals it exactly (split its weights to load darknet files). The second half is what
    darknet's `route groups=2 group_id=1` takes; as separate layers both halves can be pruned, where a
    channel split of one tensor would break when pruning makes its halves unequal.
    """

    def __init__(self, cin: int, channels: int, activation: str):
        super().__init__()
        half = channels // 2
        self.conv_a = ConvBNAct(cin, half, 3, activation=activation)
        self.conv_b = ConvBNAct(cin, half, 3, activation=activation)
        self.part1 = ConvBNAct(half, half, 3, activation=activation)
        self.part2 = ConvBNAct(half, half, 3, activation=activation)
        self.join = ConvBNAct(2 * half, channels, 1, activation=activation)
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        second = self.conv_b(x)
        a = self.part1(second)
        b = self.part2(a)
        route = self.join(torch.cat([b, a], dim=1))
        return self.pool(torch.cat([self.conv_a(x), second, route], dim=1)), route


class _PooledOnly(nn.Module):
    def __init__(self, block: CSPTinyBlock):
        super().__init__()
        self.block = block

    def forward(self, x):
        return self.block(x)[0]


class _LastStage(nn.Module):
    """The third CSP block plus darknet's final 3x3 conv; returns (stride-32 map, stride-16 route)."""

    def __init__(self, activation: str):
        super().__init__()
        self.block = CSPTinyBlock(256, 256, activation)
        self.conv = ConvBNAct(512, 512, 3, activation=activation)

    def forward(self, x):
        pooled, route = self.block(x)
        return self.conv(pooled), route


class CSPDarknetTiny(Backbone):
    """Stages: stem convs (stride 2, 4), CSP blocks (8, 16), last CSP block + conv (32).

    forward() lists one map per stage like every backbone, except that the stride-16 entry is the third
    block's route (256 channels, what YOLOv4-tiny's neck concatenates), as in darknet's yolov4-tiny.cfg.
    """

    def __init__(self, activation: str = "leaky_relu"):
        stages = [ConvBNAct(3, 32, 3, 2, activation), ConvBNAct(32, 64, 3, 2, activation),
                  _PooledOnly(CSPTinyBlock(64, 64, activation)), _PooledOnly(CSPTinyBlock(128, 128, activation)),
                  _LastStage(activation)]
        super().__init__(stages, channels=[32, 64, 128, 256, 512], strides=[2, 4, 8, 16, 32], name=CSPDARKNET)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages[:-1]:
            x = stage(x)
            features.append(x)
        out, route = self.stages[-1](x)
        features[-1] = route
        return features + [out]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)[-1]


class YoloV4Tiny(nn.Module):
    def __init__(self, backbone: Backbone, num_classes: int, anchors_per_level: int = 3, activation: str = "leaky_relu"):
        super().__init__()
        if 16 not in backbone.strides or backbone.strides[-1] != 32:
            raise ModelError(f"backbone {backbone.name!r} has stage strides {backbone.strides}; YOLOv4-tiny needs "
                             "feature maps at strides 16 and 32 (pick a backbone with a stride-32 last stage)")
        self.backbone = backbone
        self.num_classes = num_classes
        self.anchors_per_level = anchors_per_level
        self._mid_index = max(i for i, s in enumerate(backbone.strides) if s == 16)
        c16, c32 = backbone.channels[self._mid_index], backbone.channels[-1]
        out = anchors_per_level * (5 + num_classes)
        self.reduce = ConvBNAct(c32, 256, 1, activation=activation)
        self.big_conv = ConvBNAct(256, 512, 3, activation=activation)
        self.big_head = nn.Conv2d(512, out, 1)
        self.lateral = ConvBNAct(256, 128, 1, activation=activation)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.mid_conv = ConvBNAct(128 + c16, 256, 3, activation=activation)
        self.mid_head = nn.Conv2d(256, out, 1)
        for head in (self.big_head, self.mid_head):
            nn.init.normal_(head.weight, std=0.01)
            bias = head.bias.detach().view(anchors_per_level, 5 + num_classes)
            bias.zero_()
            bias[:, 4] = math.log(OBJECTNESS_PRIOR / (1 - OBJECTNESS_PRIOR))
            bias[:, 5:] = -math.log(max(1, num_classes - 1))  # class probabilities start near 1/C

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(images)
        p5 = self.reduce(features[-1])
        big = self.big_head(self.big_conv(p5))
        mid = self.mid_conv(torch.cat([self.upsample(self.lateral(p5)), features[self._mid_index]], dim=1))
        return big, self.mid_head(mid)


def check_input_size(width: int, height: int, stride: int = 32) -> None:
    bad = [f"data.image_{name}: {value}" for name, value in (("width", width), ("height", height)) if value % stride]
    if bad:
        raise SpecError(f"{', '.join(bad)} must be a multiple of {stride} (YOLOv4-tiny's coarsest stride), e.g. "
                        f"{max(stride, round(width / stride) * stride)}x{max(stride, round(height / stride) * stride)}")


def build_yolo_v4_tiny(backbone: str, num_classes: int, pretrained: bool | str | os.PathLike = False,
                       activation: str = "leaky_relu", freeze_blocks: Sequence[int] = (),
                       freeze_bn: bool = False) -> YoloV4Tiny:
    """YOLOv4-tiny on CSPDarknet-tiny (random init, or a state-dict file) or on zoo backbone `backbone`."""
    if backbone == CSPDARKNET:
        body = CSPDarknetTiny(activation)
        if isinstance(pretrained, (str, os.PathLike)):
            _load_backbone_file(body, pretrained)
    else:
        body = build_backbone(backbone, pretrained=pretrained)
    net = YoloV4Tiny(body, num_classes, activation=activation)
    net.backbone.freeze(list(freeze_blocks), freeze_bn)
    return net


def _load_backbone_file(body: CSPDarknetTiny, path) -> None:
    """A CSPDarknet-tiny state dict saved from this class (keys `stages.*`, or `backbone.stages.*` / `net.backbone.*`)."""
    from ....vision.backbones.base import PretrainedInfo
    from ....io import safe_torch_load

    state = safe_torch_load(path)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    for prefix in ("net.backbone.", "backbone."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        body.load_state_dict(state)
    except RuntimeError as e:
        raise ModelError(f"model.pretrained: {path} does not hold CSPDarknet-tiny weights ({str(e).splitlines()[0][:160]})") from None
    body.pretrained_info = PretrainedInfo(source="file", path=path, tensors_loaded=len(state))
