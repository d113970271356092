"""Pretrained models: what exists (registry), where its weights are (sources), and BYOM (onnx_import)."""
from .entry import IMAGENET_MEAN, IMAGENET_STD, ModelEntry, PackagedFile, imagenet_categories
from .registry import DEFAULT_BACKBONE, get_entry, list_models, register_model
from .onnx_import import import_onnx
from .sources import find_weights, import_weights, resolve_weights, weights_status


__all__ = [
    "DEFAULT_BACKBONE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelEntry",
    "PackagedFile",
    "find_weights",
    "get_entry",
    "imagenet_categories",
    "import_onnx",
    "import_weights",
    "list_models",
    "register_model",
    "resolve_weights",
    "weights_status",
]
