"""Export a model to ONNX (and, where installed, a TensorRT engine) and check the export.

We use torch's TorchScript-based exporter (`dynamo=False`) with constant folding off: its output
runs in ONNX Runtime, quantises, and reads back into PyTorch with onnx2torch (our BYOM importer),
which fails on the dynamo exporter's output and on folded initialisers. BatchNorm stays a separate
node in the file; ONNX Runtime and TensorRT fuse it when they load the model.
"""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
import torch
from torch import nn

from ..errors import ModelError, first_line
from ..io import atomic_write_bytes
from ..engine.meta import InputSpec, as_inputs
from .prune import output_tensors


def export_onnx(
    model: nn.Module,
    path: str | Path,
    inputs: InputSpec | Sequence[InputSpec],
    metadata: Mapping[str, Any] | None = None,
    opset: int = 17,
    output_names: Sequence[str] = ("logits",),
    output_axes: Mapping[str, Mapping[int, str]] | None = None,
) -> Path:
    """Write `model` (its `inputs`, in order -> outputs) to an ONNX file at `path`.

    Graph inputs take the specs' names and dtypes; their named axes (batch, length ...) stay dynamic,
    and outputs get a dynamic batch axis unless `output_axes` names their dynamic axes (e.g. a
    detection list [K, 7]). `metadata` lands in the file's metadata_props (strings as given,
    anything else as JSON), where `OnnxModel.metadata` reads it back. The model is traced in eval
    mode on the CPU and returned to its device and mode afterwards. Models over 2 GB (protobuf's
    limit) are not supported.
    """
    path = Path(path)
    specs = (inputs,) if isinstance(inputs, InputSpec) else tuple(inputs)
    if not specs:
        raise ModelError(f"export_onnx: {path} needs at least one input spec")
    device = next(model.parameters(), torch.empty(0)).device
    was_training = model.training
    model.cpu().eval()
    # Batch 2 and dynamic sizes other than 1, so no size-1 axis gets baked into reshapes.
    example = tuple(spec.example(batch=2, seed=i) for i, spec in enumerate(specs))
    dynamic_axes = {spec.name: spec.dynamic_axes for spec in specs if spec.dynamic_axes}
    dynamic_axes.update({name: {0: "batch"} for name in output_names})
    dynamic_axes.update({name: dict(axes) for name, axes in (output_axes or {}).items()})
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # torch warns that the TorchScript exporter is deprecated; it is our deliberate choice.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model, example, buf, dynamo=False, opset_version=opset, do_constant_folding=False,
                input_names=[spec.name for spec in specs], output_names=list(output_names), dynamic_axes=dynamic_axes,
            )
    except Exception as e:
        raise ModelError(f"ONNX export to {path} failed: {type(e).__name__}: {first_line(e)}") from e
    finally:
        model.to(device).train(was_training)

    proto = onnx.load_from_string(buf.getvalue())
    set_metadata(proto, metadata or {})
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise ModelError(f"the exported ONNX model for {path} is invalid: {first_line(e)}") from e
    return atomic_write_bytes(path, proto.SerializeToString())


def set_metadata(proto: onnx.ModelProto, metadata: Mapping[str, Any]) -> None:
    """Add or replace entries of the model's metadata_props (non-strings are stored as JSON)."""
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in metadata.items():
        text = value if isinstance(value, str) else json.dumps(value)
        if key in existing:
            existing[key].value = text
        else:
            entry = proto.metadata_props.add()
            entry.key, entry.value = str(key), text


def check_parity(
    model: nn.Module, onnx_path: str | Path, inputs: torch.Tensor | Sequence[torch.Tensor], atol: float = 1e-4,
    rtol: float = 1e-3,
) -> dict[str, Any]:
    """Compare the model's outputs with ONNX Runtime's on `inputs` (one tensor or the model's input
    tuple; every output, in order).

    An element passes when |ONNX - PyTorch| <= atol * max(1, largest |PyTorch value| of that output)
    + rtol * |PyTorch value|: atol is absolute for outputs of order 1 and relative to the output's scale
    beyond, since float32 rounding, which differs with the CPU's kernels, grows with the values summed.
    """
    from .runtime import OnnxModel

    inputs = tuple(t.cpu() for t in as_inputs(inputs))
    device = next(model.parameters(), torch.empty(0)).device
    was_training = model.training
    model.cpu().eval()
    try:
        with torch.inference_mode():
            expected = [t.float().numpy() for t in output_tensors(model(*inputs))]
    finally:
        model.to(device).train(was_training)
    onnx_model = OnnxModel(onnx_path)
    got = onnx_model(*(t.numpy() for t in inputs))
    if len(got) != len(expected):
        raise ModelError(f"{onnx_path} has {len(got)} outputs but the model returns {len(expected)}")
    for name, a, b in zip(onnx_model.output_names, expected, got):
        if a.shape != b.shape:
            raise ModelError(f"{onnx_path}: output {name} has shape {b.shape} but the model returns {a.shape}; "
                             "re-export the model")
    max_abs, max_scaled, ok = 0.0, 0.0, True
    for a, b in zip(expected, got):
        diff = np.abs(b.astype(np.float64) - a)
        scale = max(1.0, float(np.nanmax(np.abs(a), initial=0.0)))
        largest = float(diff.max(initial=0.0))  # NaN when either side has one: reported, and fails below
        max_abs, max_scaled = float(np.maximum(max_abs, largest)), float(np.maximum(max_scaled, largest / scale))
        ok = ok and bool((diff <= atol * scale + rtol * np.abs(a)).all())
    return {"max_abs_diff": max_abs, "max_scaled_diff": max_scaled, "ok": ok, "atol": atol, "rtol": rtol,
            "batch": int(inputs[0].shape[0])}


def verify_export(
    model: nn.Module, onnx_path: str | Path, inputs: torch.Tensor | Sequence[torch.Tensor], atol: float = 1e-4, rtol: float = 1e-3
) -> dict[str, Any]:
    """`check_parity`, raising ModelError when the ONNX outputs differ beyond the tolerance."""
    result = check_parity(model, onnx_path, inputs, atol=atol, rtol=rtol)
    if not result["ok"]:
        raise ModelError(
            f"{onnx_path} does not reproduce the PyTorch model: max abs difference {result['max_abs_diff']:.3g} "
            f"({result['max_scaled_diff']:.3g} relative to the output's scale) exceeds atol={atol}, rtol={rtol} on a "
            f"batch of {result['batch']}; the model may use an operation the exporter translates differently"
        )
    return result


def export_tensorrt(
    onnx_path: str | Path,
    engine_path: str | Path,
    fp16: bool = True,
    int8: bool = False,
    max_batch: int = 16,
    opt_batch: int = 1,
    workspace_gb: float = 2.0,
) -> Path:
    """Build a serialized TensorRT engine from an ONNX file (needs `tensorrt` and an NVIDIA GPU).

    INT8 uses explicit quantisation: pass the QDQ model written by `quantize_int8` with int8=True;
    TensorRT reads the scales from its Q/DQ nodes, so no calibrator runs here.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    try:
        import tensorrt as trt
    except ImportError:
        raise ModelError(
            "TensorRT is not installed: pip install tensorrt (needs an NVIDIA GPU and driver); "
            f"the ONNX file at {onnx_path} works with ONNX Runtime as it is"
        ) from None
    if not onnx_path.is_file():
        raise ModelError(f"ONNX file {onnx_path} does not exist")

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # TensorRT 8; implicit in 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT cannot parse {onnx_path}: {errors[:400]}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if int8:
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = list(tensor.shape)
        if any(d < 0 for d in dims[1:]):
            raise ModelError(f"{onnx_path}: input {tensor.name} has a dynamic size other than the batch: {dims}")
        profile.set_shape(tensor.name, [1, *dims[1:]], [opt_batch, *dims[1:]], [max_batch, *dims[1:]])
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ModelError(f"TensorRT could not build an engine from {onnx_path}; its log above says why")
    return atomic_write_bytes(engine_path, bytes(engine))


