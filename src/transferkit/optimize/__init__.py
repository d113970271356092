"""Shrink and ship a trained model: prune channels, export to ONNX, quantise to INT8, run ONNX.

Everything here works on any `nn.Module` and the input specs its checkpoint's `ModelMeta` declares
(names, dtypes, shapes with dynamic axes): an image batch, a waveform or token ids alike, so every
task reuses it unchanged.
"""
from .export import check_parity, export_onnx, export_tensorrt, set_metadata, verify_export
from .fuse import fold_batchnorm
from .profile import count_macs, count_params, file_size_bytes, measure_latency_ms, onnx_op_profile
from .prune import PrunedLayer, PruneConfig, PruneResult, apply_layer_shapes, layer_shapes, prune_model
from .quantize import TransposedLinear, quantize_int8, quantize_int8_dynamic, with_transposed_linears
from .runtime import OnnxModel, default_providers

__all__ = [
    "OnnxModel",
    "PruneConfig",
    "PruneResult",
    "PrunedLayer",
    "apply_layer_shapes",
    "check_parity",
    "count_macs",
    "count_params",
    "default_providers",
    "export_onnx",
    "export_tensorrt",
    "file_size_bytes",
    "fold_batchnorm",
    "layer_shapes",
    "measure_latency_ms",
    "onnx_op_profile",
    "prune_model",
    "quantize_int8",
    "quantize_int8_dynamic",
    "set_metadata",
    "TransposedLinear",
    "verify_export",
    "with_transposed_linears",
]
