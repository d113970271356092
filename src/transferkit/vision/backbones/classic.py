"""Backbones from whole classification networks: torchvision models and EfficientNet-Lite.

The network is built complete, pretrained weights are loaded into it (so its state dict keys are
the published ones), then its feature layers are cut into stages where the stride changes and the
classifier is dropped (kept aside in `pretrained_info.classifier`).
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ...zoo.entry import ModelEntry
from ...zoo.families import register_family
from .base import Backbone, PretrainedInfo, limit_stride, split_by_stride
from .efficientnet_lite import EfficientNetLite
from .weights import classifier_tensors, last_linear, load_backbone_state, read_state_dict


def _torchvision_network(entry: ModelEntry) -> tuple[nn.Module, list[nn.Module], str]:
    """(network, its feature layers in order, state-dict prefix of its classifier)."""
    import torchvision

    net = torchvision.models.get_model(entry.architecture, weights=None)
    if hasattr(net, "layer4"):  # ResNet family: no `features` container
        layers = [net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4]
        return net, layers, "fc."
    return net, list(net.features.children()), "classifier."


def _efficientnet_lite_network(entry: ModelEntry) -> tuple[nn.Module, list[nn.Module], str]:
    net = EfficientNetLite(entry.architecture)
    return net, net.feature_layers(), "_fc."


@register_family("torchvision")
@register_family("efficientnet_lite")
def build_classic_backbone(
    entry: ModelEntry, weights: Path | None, source: str | None, out_stride: int | None
) -> Backbone:
    """`weights`: a state dict file to load (None: random initialisation)."""
    make = _efficientnet_lite_network if entry.family == "efficientnet_lite" else _torchvision_network
    net, layers, head_prefix = make(entry)
    info = None
    if weights is not None:
        state = read_state_dict(weights)
        loaded, head_loaded = load_backbone_state(net, state, head_prefix, weights, entry.name)
        head = net.get_submodule(head_prefix.rstrip("."))
        info = PretrainedInfo(
            source=source or "file",
            path=Path(weights),
            tensors_loaded=loaded,
            classifier=classifier_tensors(last_linear(head)) if head_loaded else None,
            categories=entry.categories if head_loaded else None,
            notes=[] if head_loaded else ["the file has no matching classifier; none to reuse"],
        )
    stages, channels, strides = split_by_stride(layers)
    stages, channels, strides = limit_stride(stages, channels, strides, out_stride, entry.name)
    backbone = Backbone(stages, channels, strides, name=entry.name)
    backbone.pretrained_info = info
    return backbone
