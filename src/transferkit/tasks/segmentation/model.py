"""UNet segmenter: a decoder over any backbone's multi-stride feature maps, or `vanilla_unet` from scratch.

The decoder walks from the deepest feature map back towards the input. Each decoder stage upsamples
(bilinear, or a learned transposed conv) to the next finer "target stride", concatenates the backbone
map of that stride when there is one (the skip connection), and runs two 3x3 conv-BN-ReLU blocks.
Target strides are the backbone's shallower stage strides, then halvings down to stride 1:

    mobilenet_v2 (strides 2, 4, 8, 16, 32):  16+skip, 8+skip, 4+skip, 2+skip, 1   -> 5 decoder stages
    vanilla_unet (strides 1, 2, 4, ..., 32): 16+skip, 8+skip, 4+skip, 2+skip, 1+skip

`decoder_channels` gives each stage's width, deepest first; a shorter list stops the decoder early
(its last stride > 1; the finer skips go unused) and the logits are upsampled bilinearly to the
input size. A 1x1 conv maps the last stage to class logits; forward() returns them, [N, C, H, W]
at the input's H, W, which is also the exported ONNX output.

Inputs must be a multiple of the deepest stride (32 for every zoo backbone): skips then align exactly.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...engine.checkpoint import LoadReport, class_row_map, read_checkpoint, strip_prefix, transfer_weights
from ...errors import ModelError, SpecError
from ...vision.backbones import Backbone, build_backbone, build_onnx_segmenter

log = logging.getLogger("transferkit")

VANILLA_UNET = "vanilla_unet"
UPSAMPLING = ("bilinear", "transposed")
MAX_AUTO_WIDTH = 256  # auto decoder widths: 16 x target stride, capped here


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DecoderStage(nn.Module):
    """Upsample by `factor`, concatenate the skip map (if any), two conv-BN-ReLU blocks."""

    def __init__(self, cin: int, skip: int, cout: int, factor: int, upsampling: str):
        super().__init__()
        self.factor = factor
        if upsampling == "transposed":
            # kernel == stride: every output pixel comes from exactly one input pixel, no checkerboard.
            self.up: nn.Module | None = nn.ConvTranspose2d(cin, cout, factor, stride=factor)
            cin = cout
        else:
            self.up = None
        self.conv1 = ConvBNReLU(cin + skip, cout)
        self.conv2 = ConvBNReLU(cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.up is not None:
            x = self.up(x)
        else:
            x = F.interpolate(x, scale_factor=float(self.factor), mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class VanillaUNetEncoder(Backbone):
    """The contracting path of Ronneberger et al.'s UNet: two 3x3 conv-BN-ReLU per stage, 2x2 max pool
    between stages. Six stages at strides 1..32 (the paper has five; one more level keeps the same
    32-multiple input rule and decoder depth as the zoo backbones). Random initialisation only."""

    def __init__(self, widths: Sequence[int]):
        stages, cin = [], 3
        for i, width in enumerate(widths):
            block = nn.Sequential(ConvBNReLU(cin, width), ConvBNReLU(width, width))
            stages.append(block if i == 0 else nn.Sequential(nn.MaxPool2d(2), block))
            cin = width
        super().__init__(stages, channels=list(widths), strides=[2**i for i in range(len(widths))], name=VANILLA_UNET)


class UNet(nn.Module):
    """A UNet decoder on `backbone`'s feature maps; see the module docstring.

    When pruning, protect `head` (prune_model's ignored_layers): with a short decoder the logits are
    upsampled after it, so prune_model cannot see that its channels are the classes.
    """

    def __init__(self, backbone: Backbone, num_classes: int, decoder_channels: Sequence[int] | None = None,
                 upsampling: str = "bilinear"):
        super().__init__()
        if num_classes < 1:
            raise ModelError(f"a segmenter needs at least one class, got {num_classes}")
        if upsampling not in UPSAMPLING:
            raise SpecError(f"model.upsampling {upsampling!r} is not supported; use one of {', '.join(UPSAMPLING)}")
        self.backbone = backbone
        self.num_classes = num_classes
        levels = _feature_levels(backbone)
        self._level_index = [i for i, _ in levels]  # backbone maps used: deepest first
        deepest = levels[0][1]
        skip_strides = [s for _, s in levels[1:]]
        targets = list(skip_strides)
        s = targets[-1] if targets else deepest
        while s > 1 and s % 2 == 0:
            s //= 2
            targets.append(s)
        decoder_channels = _decoder_widths(decoder_channels, targets, backbone.name)
        targets = targets[: len(decoder_channels)]

        self.stride = deepest  # inputs must be a multiple of this
        self.decoder = nn.ModuleList()
        self._skip_of_stage: list[int | None] = []  # index into the backbone's feature list, per stage
        cin, previous = backbone.channels[levels[0][0]], deepest
        for target, width in zip(targets, decoder_channels):
            if previous % target:
                raise ModelError(f"backbone {backbone.name!r} has stage strides {backbone.strides}: stride {previous} "
                                 f"is not a whole multiple of {target}, so the decoder cannot align their maps")
            skip_index = next((i for i, st in levels if st == target), None)
            skip = backbone.channels[skip_index] if skip_index is not None else 0
            self.decoder.append(DecoderStage(cin, skip, width, previous // target, upsampling))
            self._skip_of_stage.append(skip_index)
            cin, previous = width, target
        self.output_stride = previous  # the logits' stride before the final upsampling
        self.head = nn.Conv2d(cin, num_classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing():  # a traced graph has a fixed size anyway
            _check_tensor_size(images, self.stride)
        features = self.backbone(images)
        x = features[self._level_index[0]]
        for stage, skip_index in zip(self.decoder, self._skip_of_stage):
            x = stage(x, None if skip_index is None else features[skip_index])
        logits = self.head(x)
        if self.output_stride != 1:
            logits = F.interpolate(logits, scale_factor=float(self.output_stride), mode="bilinear", align_corners=False)
        return logits


def _feature_levels(backbone: Backbone) -> list[tuple[int, int]]:
    """(feature index, stride) of the maps the decoder reads, deepest first; the last map of each stride."""
    if any(s is None for s in backbone.strides):
        raise ModelError(f"backbone {backbone.name!r} ends in a pooled vector, not a feature map; a segmenter needs "
                         "spatial maps (import the ONNX model with --features at convolutional nodes)")
    by_stride: dict[int, int] = {}
    for index, stride in enumerate(backbone.strides):
        by_stride[int(stride)] = index
    return sorted(((i, s) for s, i in by_stride.items()), key=lambda pair: -pair[1])


def _decoder_widths(channels: Sequence[int] | None, targets: list[int], name: str) -> list[int]:
    if channels is None:
        return [min(MAX_AUTO_WIDTH, 16 * t) for t in targets]
    channels = [int(c) for c in channels]
    if not channels or any(c < 1 for c in channels):
        raise SpecError(f"model.decoder_channels must be a non-empty list of positive widths, got {channels}")
    if len(channels) > len(targets):
        raise SpecError(
            f"model.decoder_channels has {len(channels)} entries but backbone {name!r} allows at most {len(targets)} "
            f"decoder stages (target strides {targets}); give {len(targets)} or fewer, e.g. "
            f"{[min(MAX_AUTO_WIDTH, 16 * t) for t in targets]}"
        )
    return channels


def _check_tensor_size(images: torch.Tensor, stride: int) -> None:
    height, width = int(images.shape[-2]), int(images.shape[-1])
    if height % stride or width % stride:
        raise ModelError(f"input size {height}x{width} (HxW) is not a multiple of {stride}, the segmenter's coarsest "
                         f"stride; resize to e.g. {max(stride, round(height / stride) * stride)}x"
                         f"{max(stride, round(width / stride) * stride)}")


def check_input_size(width: int, height: int, stride: int = 32) -> None:
    """The spec's data.image_width / image_height must tile into the deepest feature map exactly."""
    bad = [f"data.image_{name}: {value}" for name, value in (("width", width), ("height", height))
           if value <= 0 or value % stride]
    if bad:
        raise SpecError(f"{', '.join(bad)} must be a positive multiple of {stride} (the segmenter's coarsest "
                        f"stride), e.g. {max(stride, round(width / stride) * stride)}x"
                        f"{max(stride, round(height / stride) * stride)}")


def build_segmenter(
    backbone: str,
    num_classes: int,
    pretrained: bool | str | os.PathLike = True,
    decoder_channels: Sequence[int] | None = None,
    freeze_blocks: Sequence[int] = (),
    freeze_bn: bool = False,
    upsampling: str = "bilinear",
    classes: Sequence[str] | None = None,
) -> tuple[UNet, LoadReport | None]:
    """A UNet on zoo backbone `backbone` (or `vanilla_unet`), and what happened to its weights.

    pretrained: True (zoo ImageNet weights; vanilla_unet has none and starts from scratch), False,
    a backbone state-dict `.pth`, or a transferkit `.ckpt` of any task whose matching tensors are
    copied in (a classifier's backbone, or a segmenter's decoder too; with `classes`, the head rows of
    classes a segmentation checkpoint shares by name are kept).
    decoder_channels: one width per decoder stage, deepest first (None: 16 x stride, at most 256;
    for vanilla_unet the encoder mirrors them: [256, 128, 64, 32, 16] -> widths 16 ... 512).
    The report is None when nothing was loaded.
    """
    is_ckpt = isinstance(pretrained, (str, os.PathLike)) and str(pretrained).endswith(".ckpt")
    ckpt = Path(pretrained) if is_ckpt else None
    if ckpt is not None and not ckpt.is_file():
        raise ModelError(f"model.pretrained: checkpoint {ckpt} does not exist")
    if backbone == VANILLA_UNET:
        net = _vanilla_unet(num_classes, decoder_channels, upsampling)
        if isinstance(pretrained, (str, os.PathLike)) and ckpt is None:
            raise ModelError(f"model.pretrained: {VANILLA_UNET} loads weights from a transferkit .ckpt only, got "
                             f"{pretrained}; use a best.ckpt/last.ckpt of an earlier run, or pretrained=false")
        if pretrained is True:
            log.info("%s has no pretrained weights: training from scratch", VANILLA_UNET)
    elif _imported_segmenter(backbone):
        # A whole segmentation network the user imported (`import-onnx --head`): its own decoder, a new last layer.
        if isinstance(pretrained, (str, os.PathLike)) and ckpt is None:
            raise ModelError(f"model.pretrained: {backbone!r} is an imported ONNX network with its own weights; use "
                             "pretrained=true, false, or a transferkit .ckpt")
        net = build_onnx_segmenter(backbone, num_classes, pretrained=ckpt is None and bool(pretrained))
    else:
        body = build_backbone(backbone, pretrained=False if ckpt is not None else pretrained)
        net = UNet(body, num_classes, decoder_channels, upsampling)

    if ckpt is not None:
        meta, state = read_checkpoint(ckpt)  # any task's tensors transfer by name
        row_maps = None
        if meta.task == "segmentation" and classes is not None:
            rows = class_row_map(list(meta.classes), list(classes))
            row_maps = {"head.weight": rows, "head.bias": rows}
        report = transfer_weights(net, strip_prefix(state, "net."), str(ckpt), row_maps)
    else:  # the backbone loaded its weights itself; every decoder tensor is new
        report = LoadReport.backbone_only(net, "new segmentation decoder")
    net.backbone.freeze(list(freeze_blocks), freeze_bn)
    return net, report


def _imported_segmenter(name: str) -> bool:
    """Whether zoo model `name` is a whole segmentation network imported with its replaceable last layer."""
    from ...zoo import get_entry
    from ...zoo.onnx_import import onnx_head

    return onnx_head(get_entry(name)) is not None


def _vanilla_unet(num_classes: int, decoder_channels: Sequence[int] | None, upsampling: str) -> UNet:
    widths = [16, 32, 64, 128, 256] if decoder_channels is None else [int(c) for c in decoder_channels][::-1]
    if len(widths) != 5 or any(w < 1 for w in widths):
        raise SpecError(f"model.decoder_channels: {VANILLA_UNET} needs 5 positive widths, deepest first, one per "
                        f"decoder stage (its encoder mirrors them), e.g. [256, 128, 64, 32, 16]; "
                        f"got {decoder_channels}")
    encoder = VanillaUNetEncoder(widths + [2 * widths[-1]])
    return UNet(encoder, num_classes, widths[::-1], upsampling)
