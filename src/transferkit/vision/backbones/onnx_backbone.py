"""Backbones from ONNX models imported with `transferkit.zoo.import_onnx` (bring your own model)."""
from __future__ import annotations

from pathlib import Path

from ...errors import ModelError
from ...zoo.entry import ModelEntry
from ...zoo.families import register_family
from ...zoo.onnx_import import convert_onnx
from ...zoo.sources import find_weights
from .base import Backbone, PretrainedInfo


def build_onnx_backbone(entry: ModelEntry, weights: Path, source: str, out_stride: int | None, random_init: bool) -> Backbone:
    """One stage holding the whole converted graph. Its output is [N, C, H, W] (stride known) or a
    pooled [N, C] vector (stride None), as recorded at import time.

    random_init=True keeps the architecture and re-initialises every layer that knows how
    (Conv, Linear, BatchNorm); weights held as plain tensors (MatMul matrices) keep their values.
    """
    import onnx

    stride = entry.meta.get("stride")
    if out_stride is not None and out_stride != stride:
        raise ModelError(
            f"out_stride {out_stride} is not available for imported model {entry.name!r}: it outputs stride "
            f"{stride if stride is not None else 'none (a pooled vector)'}; cut it elsewhere with features_node= when importing"
        )
    module = convert_onnx(onnx.load(str(weights)))
    backbone = Backbone([module], [int(entry.meta["channels"])], [stride], name=entry.name)
    if random_init:
        for layer in module.modules():
            if layer is not module and hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
        return backbone
    backbone.pretrained_info = PretrainedInfo(
        source=source,
        path=Path(weights),
        tensors_loaded=len(module.state_dict()),
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
