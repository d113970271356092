"""Pretrained models: what exists (registry), how each family is built (families), where its weights are
(sources; huggingface for model folders), and BYOM (onnx_import)."""
from .entry import IMAGENET_MEAN, IMAGENET_STD, MODALITIES, ModelEntry, PackagedFile, imagenet_categories
from .families import family_names, get_family, register_family
from .registry import DEFAULT_BACKBONE, get_entry, get_image_entry, list_models, register_model
from .onnx_import import import_onnx
from .sources import find_weights, import_weights, resolve_weights, weights_status
from .huggingface import find_model_folder, resolve_model_folder


__all__ = [
    "DEFAULT_BACKBONE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODALITIES",
    "ModelEntry",
    "PackagedFile",
    "family_names",
    "find_model_folder",
    "find_weights",
    "get_entry",
    "get_family",
    "get_image_entry",
    "imagenet_categories",
    "import_onnx",
    "import_weights",
    "list_models",
    "register_family",
    "register_model",
    "resolve_model_folder",
    "resolve_weights",
    "weights_status",
]
