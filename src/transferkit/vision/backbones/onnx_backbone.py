"""Backbones (and whole segmenters) from ONNX models imported with `transferkit.zoo.import_onnx` (bring your own model).

    build_backbone("my_encoder")                      # imported with features_node=[...]: one map per node
    net = build_onnx_segmenter("my_segnet", 3)        # imported with head_node=: its last layer replaced
    net(images)                                       # logits [N, 3, H, W] at the input size
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ModelError
from ...zoo.entry import ModelEntry
from ...zoo.families import register_family
from ...zoo.onnx_import import convert_feature_stages, convert_onnx, extract_outputs, head_weights, onnx_head
from ...zoo.registry import get_image_entry
from ...zoo.sources import find_weights
from .base import Backbone, PretrainedInfo, limit_stride
from .timm_backbone import WholeModelBackbone


class OnnxGraphBackbone(WholeModelBackbone):
    """Several imported feature maps that one graph computes together (a map needs more than the one
    before it, e.g. an FPN's top-down path), so the graph cannot be cut into stages."""

    def freeze(self, blocks: Sequence[int] = (), freeze_bn: bool = False) -> Backbone:
        if blocks and sorted(b % len(self.channels) for b in blocks) != list(range(len(self.channels))):
            raise ModelError(
                f"backbone {self.name!r} cannot freeze single stages (its feature maps come from one ONNX graph); "
                f"freeze all of 0..{len(self.channels) - 1} or none"
            )
        return Backbone.freeze(self, [0] if blocks else [], freeze_bn)


def _reinitialise(modules: Sequence[nn.Module]) -> None:
    for module in modules:
        for layer in module.modules():
            if layer is not module and hasattr(layer, "reset_parameters"):
                layer.reset_parameters()


def build_onnx_backbone(entry: ModelEntry, weights: Path, source: str, out_stride: int | None, random_init: bool) -> Backbone:
    """The converted graph as a Backbone, with the outputs recorded at import time.

    One feature node: one stage, [N, C, H, W] (stride known) or a pooled [N, C] vector (stride None).
    Several: one stage per map when each map is computed from the previous one, else one stage
    returning them all (OnnxGraphBackbone). An entry imported with a head gives its body (the head's input).
    random_init=True keeps the architecture and re-initialises every layer that knows how
    (Conv, Linear, BatchNorm); weights held as plain tensors (MatMul matrices) keep their values.
    """
    import onnx

    model = onnx.load(str(weights))
    features = entry.meta.get("features")
    if isinstance(features, list):
        channels, strides = [int(c) for c in entry.meta["channels"]], [int(s) for s in entry.meta["strides"]]
        modules, chained = convert_feature_stages(model, features)
        if chained:
            stages, channels, strides = limit_stride(modules, channels, strides, out_stride, entry.name)
            backbone: Backbone = Backbone(stages, channels, strides, name=entry.name)
        else:
            if out_stride is not None and out_stride != strides[-1]:
                raise ModelError(
                    f"out_stride {out_stride} is not available for imported model {entry.name!r}: its maps (strides "
                    f"{strides}) come from one graph; import it again with features nodes up to stride {out_stride}"
                )
            backbone = OnnxGraphBackbone(modules[0], channels, strides, name=entry.name)
            stages = modules
    else:
        stride = entry.meta.get("stride")
        if out_stride is not None and out_stride != stride:
            raise ModelError(
                f"out_stride {out_stride} is not available for imported model {entry.name!r}: it outputs stride "
                f"{stride if stride is not None else 'none (a pooled vector)'}; cut it elsewhere with features_node= when importing"
            )
        stages = [convert_onnx(extract_outputs(model, [features]) if features else model)]
        backbone = Backbone(stages, [int(entry.meta["channels"])], [stride], name=entry.name)
    if random_init:
        _reinitialise(stages)
        return backbone
    backbone.pretrained_info = PretrainedInfo(
        source=source,
        path=Path(weights),
        tensors_loaded=sum(len(stage.state_dict()) for stage in stages),
        classifier=None,  # the head was cut off at import time; its class names stay in entry.categories
        categories=None,
    )
    return backbone


@register_family("onnx")
def build_imported_onnx_backbone(
    entry: ModelEntry, weights: Path | None, source: str | None, out_stride: int | None
) -> Backbone:
    """The family builder: the imported graph with its own weights, or re-initialised (weights None)."""
    if source == "file":
        raise ModelError(f"{entry.name!r} is an imported ONNX model and carries its own weights: use pretrained=True")
    if weights is None:  # random init still needs the graph
        found = find_weights(entry)
        return build_onnx_backbone(entry, found.path, found.source, out_stride, random_init=True)
    return build_onnx_backbone(entry, weights, source or "onnx import", out_stride, random_init=False)


# ---------------------------------------------------------------------------------------------
# A whole imported segmentation network with a new last layer


class OnnxSegmenter(nn.Module):
    """An imported dense-prediction network: its body (a one-stage Backbone), a new last layer of the
    same geometry with `num_classes` outputs, and an upsampling to the input size when the layer's
    output is smaller (with the mode of the graph's own final Resize, else bilinear).

    forward(images) returns logits [N, num_classes, H, W]; the graph's final Sigmoid/Softmax is left out.
    `head_init` says how the new layer started: "copied", "sigmoid as 2-class softmax", or "random".
    """

    def __init__(self, backbone: Backbone, head: nn.Module, num_classes: int, upsample: dict[str, Any] | None,
                 head_init: str):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.num_classes = num_classes
        self.upsample_mode = (upsample or {}).get("mode", "bilinear")
        self.align_corners = bool((upsample or {}).get("align_corners")) if self.upsample_mode != "nearest" else None
        self.head_init = head_init

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.backbone.forward_features(images))
        if logits.shape[-2:] != images.shape[-2:]:
            logits = F.interpolate(logits, size=images.shape[-2:], mode=self.upsample_mode,
                                   align_corners=self.align_corners)
        return logits


def _symmetric_padding(head: dict[str, Any]) -> tuple[int, int]:
    pads = head["pads"]
    if pads[:2] != pads[2:]:
        raise ModelError(
            f"the last layer {head['node']!r} pads unevenly ({pads}: top, left, bottom, right); "
            "only symmetric padding can be rebuilt"
        )
    return pads[0], pads[1]


def _new_head(head: dict[str, Any], num_classes: int) -> nn.Module:
    if len(head["kernel_shape"]) != 2:
        raise ModelError(f"the last layer {head['node']!r} is a {len(head['kernel_shape'])}-D convolution; "
                         "an image segmenter needs a 2-D one")
    common = dict(kernel_size=tuple(head["kernel_shape"]), stride=tuple(head["strides"]),
                  padding=_symmetric_padding(head), dilation=tuple(head["dilations"]))
    if head["op"] == "Conv":
        return nn.Conv2d(head["in_channels"], num_classes, **common)
    return nn.ConvTranspose2d(head["in_channels"], num_classes, output_padding=tuple(head["output_padding"]), **common)


def _load_head(layer: nn.Module, op: str, weight: np.ndarray, bias: np.ndarray | None, num_classes: int) -> str:
    """Start the new layer from the imported one where the classes allow; returns how it started."""
    old = weight.shape[0] if op == "Conv" else weight.shape[1]  # ConvTranspose weights are [in, out, kh, kw]
    axis = 0 if op == "Conv" else 1
    bias = np.zeros(old, np.float32) if bias is None else bias
    if num_classes == old:
        new_weight, new_bias, how = weight, bias, "copied"
    elif old == 1 and num_classes == 2:
        # softmax([0, z]) == [1 - sigmoid(z), sigmoid(z)]: the binary detector's prediction carries over exactly
        # (if the graph ended in a Sigmoid, class 1 is its positive class).
        new_weight = np.concatenate([np.zeros_like(weight), weight], axis=axis)
        new_bias, how = np.concatenate([np.zeros(1, np.float32), bias]), "sigmoid as 2-class softmax"
    else:
        return "random"
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(new_weight)))
        layer.bias.copy_(torch.from_numpy(np.ascontiguousarray(new_bias)))
    return how


def build_onnx_segmenter(model: str | ModelEntry, num_classes: int, pretrained: bool = True) -> OnnxSegmenter:
    """The network imported with `import_onnx(..., head_node=...)`, its last layer rebuilt for num_classes.

    pretrained=False re-initialises the body too. The new layer keeps the imported weights when the
    class count is unchanged, or when a one-channel (sigmoid) layer becomes two classes; else random.
    """
    entry = model if isinstance(model, ModelEntry) else get_image_entry(model)
    head = onnx_head(entry)
    if head is None:
        raise ModelError(
            f"{entry.name!r} was not imported as a whole segmentation network; import it with "
            "`tkit model import-onnx NAME FILE --head auto` (or use it as an encoder: --features NODE,NODE,...)"
        )
    if num_classes < 1:
        raise ModelError(f"a segmenter needs at least one class, got {num_classes}")
    import onnx

    found = find_weights(entry)
    backbone = build_onnx_backbone(entry, found.path, found.source, None, random_init=not pretrained)
    layer = _new_head(head, num_classes)
    how = "random"
    if pretrained:
        weight, bias = head_weights(onnx.load(str(found.path)), head)
        how = _load_head(layer, head["op"], weight, bias, num_classes)
        if backbone.pretrained_info is not None:
            backbone.pretrained_info.notes.append(f"last layer {head['node']!r} -> {num_classes} classes: {how}")
    return OnnxSegmenter(backbone, layer, num_classes, head.get("upsample"), how)
