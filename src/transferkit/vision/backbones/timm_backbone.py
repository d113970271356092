"""Backbones for any timm model (`timm:<name>`), built with `features_only=True`."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ...errors import ModelError
from ...zoo.entry import ModelEntry
from ...zoo.families import register_family
from ...zoo.registry import TIMM_PREFIX
from .base import Backbone, PretrainedInfo, limit_stride
from .weights import read_state_dict


class WholeModelBackbone(Backbone):
    """For timm feature models that collect features with hooks or getters, so cannot be cut into
    sequential stages (ViTs, ...): one module returns all feature maps; freezing is all-or-nothing."""

    def __init__(self, model: nn.Module, channels: Sequence[int], strides: Sequence[int], name: str):
        super().__init__([model], [channels[-1]], [strides[-1]], name=name)
        self.channels, self.strides = list(channels), list(strides)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.stages[0](x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)[-1]

    def freeze(self, blocks: Sequence[int] = (), freeze_bn: bool = False) -> "Backbone":
        if blocks and sorted(b % len(self.channels) for b in blocks) != list(range(len(self.channels))):
            raise ModelError(
                f"backbone {self.name!r} cannot freeze single stages (timm builds its features with hooks); "
                f"freeze all of 0..{len(self.channels) - 1} or none"
            )
        return super().freeze([0] if blocks else [], freeze_bn)


def _create(model_name: str, **kwargs) -> nn.Module:
    import timm
    from timm.models._features import FeatureDictNet

    model = timm.create_model(model_name, features_only=True, **kwargs)
    if not isinstance(model, FeatureDictNet):
        # Models with their own feature class (timm's EfficientNet, MobileNetV3) can be rebuilt as a
        # flat sequence of modules, which is what lets us cut stages.
        try:
            flat = timm.create_model(model_name, features_only=True, feature_cfg=dict(flatten_sequential=True), **kwargs)
        except (TypeError, AssertionError, ValueError, KeyError):
            flat = None
        if isinstance(flat, FeatureDictNet):
            model = flat
    return model


def _sequential_stages(model: nn.Module) -> list[nn.Module] | None:
    """Cut a FeatureDictNet's children into stages ending at each returned layer; None if that fails."""
    from timm.models._features import FeatureDictNet

    if not isinstance(model, FeatureDictNet):
        return None
    groups: list[list[nn.Module]] = [[]]
    for child_name, child in model.named_children():
        groups[-1].append(child)
        if child_name in model.return_layers:
            groups.append([])
    stages = [nn.Sequential(*g) for g in groups if g][: len(model.return_layers)]
    # FeatureDictNet promises its children run in registration order; prove it on a small input.
    x = torch.randn(1, 3, 64, 64)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = list(model(x))
            got = []
            for stage in stages:
                x = stage(x)
                got.append(x)
    except Exception:
        return None
    finally:
        model.train(was_training)
    same = len(got) == len(expected) and all(a.shape == b.shape and torch.allclose(a, b) for a, b in zip(got, expected))
    return stages if same else None


def _classifier_from_file(state: dict[str, torch.Tensor], classifier: str | tuple | None) -> dict[str, torch.Tensor] | None:
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier or ())
    if len(names) != 1 or f"{names[0]}.weight" not in state or state[f"{names[0]}.weight"].ndim != 2:
        return None
    weight = state[f"{names[0]}.weight"]
    return {"weight": weight.clone(), "bias": state.get(f"{names[0]}.bias", torch.zeros(weight.shape[0])).clone()}


@register_family("timm")
def build_timm_backbone(entry: ModelEntry, weights: Path | None, source: str | None, out_stride: int | None) -> Backbone:
    model_name = entry.name[len(TIMM_PREFIX):]
    kwargs: dict = {"pretrained": False}
    if weights is not None:
        kwargs = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(weights)}}
    try:
        model = _create(model_name, **kwargs)
    except ModelError:
        raise
    except Exception as e:  # size mismatches, unreadable files, unsupported features_only
        raise ModelError(f"timm could not build {entry.name!r}{f' from {weights}' if weights else ''}: {type(e).__name__}: {e}") from e

    channels = list(model.feature_info.channels())
    strides = list(model.feature_info.reduction())
    stages = _sequential_stages(model)
    if stages is None:
        if out_stride is not None and out_stride != strides[-1]:
            raise ModelError(f"out_stride is not supported for {entry.name!r}: its features come from hooks")
        backbone: Backbone = WholeModelBackbone(model, channels, strides, entry.name)
    else:
        stages, channels, strides = limit_stride(stages, channels, strides, out_stride, entry.name)
        backbone = Backbone(stages, channels, strides, name=entry.name)

    if weights is not None:
        state = read_state_dict(weights) if Path(weights).suffix != ".npz" else {}
        classifier = _classifier_from_file(state, entry.meta.get("classifier"))
        backbone.pretrained_info = PretrainedInfo(
            source=source or "file",
            path=Path(weights),
            tensors_loaded=len(state) - (2 if classifier else 0),
            classifier=classifier,
            categories=entry.categories if classifier is not None else None,
        )
    return backbone
