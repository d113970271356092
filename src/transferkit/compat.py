"""Reading files written by earlier releases: every piece of knowledge about old formats lives here.

Metadata version 1 (transferkit 0.1.0, before ModelMeta) was one untyped dict at the top of the checkpoint
or in the ONNX `transferkit` property; every model then took one normalised image batch, sized by
`image_size` (classification) or `image_width`/`image_height` (detection).
"""
from __future__ import annotations

from typing import Any, Mapping

from .engine.meta import image_input, input_to_dict
from .errors import ModelError

# Keys version 1 kept at the top level beside the task's own architecture facts.
_V1_CORE = {"task", "classes", "backbone", "mean", "std", "image_size", "image_width", "image_height", "pruned_shapes"}
_V1_EXPORT = {"nms", "onnx_graph"}
_V1_HISTORY = {"pruned_from", "prune"}


def meta_v1_to_v2(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Version 1: one untyped dict; every model took one image, sized by image_size or image_width/height."""
    if "image_size" in data:
        height = width = data["image_size"]
    elif "image_width" in data and "image_height" in data:
        height, width = data["image_height"], data["image_width"]
    else:
        raise ModelError(f"{source}: its version-1 metadata has no image size; re-export or retrain it")
    mean, std = data.get("mean", (0.0, 0.0, 0.0)), data.get("std", (1.0, 1.0, 1.0))
    known = _V1_CORE | _V1_EXPORT | _V1_HISTORY
    return {
        "task": data["task"], "classes": data.get("classes") or [], "backbone": data.get("backbone"),
        "inputs": [input_to_dict(image_input(height, width, mean, std))],
        "arch": {k: v for k, v in data.items() if k not in known},
        "pruned_shapes": data.get("pruned_shapes"),
        "export": {k: data[k] for k in _V1_EXPORT if k in data},
        "history": {k: data[k] for k in _V1_HISTORY if k in data},
    }
