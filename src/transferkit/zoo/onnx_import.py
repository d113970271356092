"""Bring your own model: turn a user's ONNX classifier or backbone into a trainable torch backbone.

import_onnx(name, file) normalises the graph into the form onnx2torch reads (onnx_normalise), cuts off the
classifier head, converts it, proves the conversion against onnxruntime, and stores the result
under $TRANSFERKIT_HOME/onnx/<name>/ (model.onnx, entry.json, report.json) so that
`build_backbone(name)` works in any later process.

What the backbone outputs: for a classifier ending in GlobalAveragePool/ReduceMean -> Flatten ->
Gemm/MatMul(+Add), the 4-D map *before* the global pool ([N, C, H, W], so detection heads can use
it too); when no such pool precedes the head, the 2-D vector fed to the head ([N, C]). Without a
recognisable head, the model's own output is taken as the features.
"""
from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from ..io import atomic_write_bytes, atomic_write_json
from .checksums import file_sha256
from .entry import IMAGENET_MEAN, IMAGENET_STD, ModelEntry, entry_to_dict
from .onnx_normalise import default_opset, normalise_onnx, unsupported_nodes
from .registry import list_models, onnx_models_dir

ATOL, RTOL = 1e-4, 1e-3
_HEAD_PASSTHROUGH = {"Softmax", "LogSoftmax", "Sigmoid", "Identity", "Dropout"}
_FLATTENING = {"Flatten", "Reshape", "Squeeze", "Identity", "Dropout"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------------------------
# Finding the features


def _producers(model) -> dict[str, Any]:
    return {out: node for node in model.graph.node for out in node.output}


def _find_features(model) -> tuple[str, str]:
    """(tensor name, how it was found) of the features feeding the classifier head."""
    initializers = {i.name for i in model.graph.initializer}
    produced_by = _producers(model)
    if len(model.graph.output) != 1:
        raise ModelError(
            f"the ONNX model has {len(model.graph.output)} outputs; name the features with features_node="
        )
    value = model.graph.output[0].name
    node = produced_by.get(value)
    while node is not None and node.op_type in _HEAD_PASSTHROUGH:
        value = node.input[0]
        node = produced_by.get(value)
    head = None
    if node is not None and node.op_type == "Gemm" and node.input[1] in initializers:
        head = node
    elif node is not None and node.op_type == "Add" and any(i in initializers for i in node.input):
        other = next(i for i in node.input if i not in initializers)
        matmul = produced_by.get(other)
        if matmul is not None and matmul.op_type == "MatMul" and matmul.input[1] in initializers:
            head = matmul
    elif node is not None and node.op_type == "MatMul" and node.input[1] in initializers:
        head = node
    if head is None:
        return model.graph.output[0].name, "no classifier head recognised: the model's output is the features"
    vector = head.input[0]
    value, node = vector, produced_by.get(vector)
    while node is not None and node.op_type in _FLATTENING:
        value = node.input[0]
        node = produced_by.get(value)
    if node is not None and (node.op_type == "GlobalAveragePool" or _is_spatial_mean(model, node)):
        return node.input[0], f"cut before {node.op_type} '{node.name}' and the {head.op_type} head '{head.name}'"
    return vector, f"cut before the {head.op_type} head '{head.name}' (its input is a vector)"


def _is_spatial_mean(model, node) -> bool:
    """A ReduceMean over the two spatial axes of an NCHW map (axes as attribute, or input from opset 18)."""
    from onnx import helper, numpy_helper

    if node.op_type != "ReduceMean":
        return False
    axes = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axes"), None)
    if axes is None and len(node.input) > 1:
        init = next((i for i in model.graph.initializer if i.name == node.input[1]), None)
        axes = numpy_helper.to_array(init).tolist() if init is not None else None
    return axes is not None and sorted(axes) in ([2, 3], [-2, -1])


def _resolve_features_node(model, features_node: str) -> str:
    """A node name (its first output) or a tensor name -> tensor name."""
    for node in model.graph.node:
        if node.name == features_node:
            return node.output[0]
    values = {out for node in model.graph.node for out in node.output}
    if features_node in values:
        return features_node
    names = [n.name for n in model.graph.node if n.name] + sorted(values)
    close = difflib.get_close_matches(features_node, names, n=3, cutoff=0.4)
    hint = f" Close names: {', '.join(close)}." if close else ""
    raise ModelError(f"features_node {features_node!r} is neither a node nor a tensor in the ONNX graph.{hint}")


def _extract(model, input_name: str, output_name: str):
    from onnx import TensorProto, helper, shape_inference
    from onnx.utils import Extractor

    if output_name == model.graph.output[0].name and len(model.graph.output) == 1:
        return model
    inferred = shape_inference.infer_shapes(model)  # the Extractor needs a value_info for the new output
    if output_name not in {v.name for v in inferred.graph.value_info}:
        inferred.graph.value_info.append(helper.make_tensor_value_info(output_name, TensorProto.FLOAT, None))
    extracted = Extractor(inferred).extract_model([input_name], [output_name])
    extracted.metadata_props.extend(model.metadata_props)
    return extracted


# --------------------------------------------------------------------------------------------
# Conversion


def convert_onnx(model):
    """onnx2torch conversion whose float weights are all trainable nn.Parameters.

    onnx2torch keeps initializers that are not a Conv/Gemm/BatchNorm weight (a MatMul matrix, an Add
    bias) as buffers. Those with more than one element become Parameters; scalars stay constants
    (epsilons, the 3 and 6 of hard-swish), as do BatchNorm running statistics.
    """
    import torch
    from onnx2torch import convert
    from onnx2torch.node_converters.batch_norm import OnnxBatchNorm

    if missing := unsupported_nodes(model):
        ops = sorted({op for op, _ in missing})
        nodes = ", ".join(f"{name} ({op})" for op, name in missing[:10])
        raise ModelError(
            f"the ONNX model uses operators onnx2torch cannot convert: {', '.join(ops)} "
            f"(nodes: {nodes}{', ...' if len(missing) > 10 else ''}). Re-export the model without them, "
            "or cut the graph before them with features_node="
        )
    try:
        module = convert(model)
    except (NotImplementedError, KeyError, ValueError, RuntimeError) as e:
        raise ModelError(f"onnx2torch could not convert the ONNX model: {type(e).__name__}: {e}") from e

    keep_as_buffer = set()
    for fx_node in module.graph.nodes:
        if fx_node.op == "call_module" and isinstance(module.get_submodule(fx_node.target), OnnxBatchNorm):
            keep_as_buffer |= {a.target for a in fx_node.args[3:5] if getattr(a, "op", None) == "get_attr"}
    container = getattr(module, "initializers", None)
    promoted = 0
    if container is not None:
        for name, tensor in list(container.named_buffers(recurse=False)):
            if tensor.is_floating_point() and tensor.numel() > 1 and f"initializers.{name}" not in keep_as_buffer:
                delattr(container, name)
                container.register_parameter(name, torch.nn.Parameter(tensor.detach().clone()))
                promoted += 1
    module.promoted_buffers = promoted
    return module


def _input_spec(model) -> tuple[str, int, tuple[int | None, int | None], int | None]:
    """(name, channels, (H, W) or None where dynamic, fixed batch or None) of the single image input."""
    inputs = list(model.graph.input)
    if len(inputs) != 1:
        raise ModelError(
            f"the ONNX model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
            "a backbone takes exactly one image batch [N, C, H, W]"
        )
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ModelError(f"the ONNX input {inputs[0].name!r} has rank {len(dims)}; expected an image batch [N, C, H, W]")
    fixed = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
    return inputs[0].name, fixed[1] or 3, (fixed[2], fixed[3]), fixed[0]


def _metadata(model) -> dict[str, Any]:
    """Our exporter writes mean, std, input_size and class_names as JSON strings in metadata_props."""
    props = {p.key: p.value for p in model.metadata_props}
    parsed: dict[str, Any] = {}
    for key in ("mean", "std", "input_size", "class_names"):
        if key in props:
            try:
                parsed[key] = json.loads(props[key])
            except ValueError as e:
                raise ModelError(f"ONNX metadata {key!r} must be JSON, got {props[key]!r}") from e
    for key in ("mean", "std"):
        if key in parsed and (not isinstance(parsed[key], list) or len(parsed[key]) not in (1, 3)):
            raise ModelError(f"ONNX metadata {key!r} must be a JSON list of 1 or 3 numbers, got {props[key]!r}")
    return parsed


def _per_channel(values) -> tuple[float, float, float]:
    values = [float(v) for v in values]
    return tuple(values * 3 if len(values) == 1 else values)


def check_fidelity(model, module, input_shape: tuple[int, ...], seed: int = 0) -> tuple[float, np.ndarray]:
    """Max |onnxruntime - torch| on a random batch; raises ModelError above ATOL + RTOL * max|ref|."""
    import onnxruntime as ort
    import torch

    x = np.random.default_rng(seed).standard_normal(input_shape).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    reference = session.run(None, {session.get_inputs()[0].name: x})[0]
    module.eval()
    with torch.no_grad():
        ours = module(torch.from_numpy(x))
    ours = ours[0] if isinstance(ours, (tuple, list)) else ours
    ours = ours.numpy()
    if ours.shape != reference.shape:
        raise ModelError(f"converted model outputs shape {ours.shape}, onnxruntime {reference.shape}")
    diff = float(np.abs(ours - reference).max()) if reference.size else 0.0
    if not diff <= ATOL + RTOL * float(np.abs(reference).max(initial=0.0)):
        raise ModelError(
            f"the converted model disagrees with onnxruntime: max abs difference {diff:.3g} on outputs up to "
            f"{float(np.abs(reference).max(initial=0.0)):.3g}; the conversion is not faithful for this graph"
        )
    return diff, reference


# --------------------------------------------------------------------------------------------


def import_onnx(
    name: str, onnx_file: str | os.PathLike, features_node: str | None = None, overwrite: bool = False
) -> tuple[ModelEntry, dict[str, Any]]:
    """Convert and register a user's ONNX model as backbone `name`; returns (entry, report)."""
    import onnx

    if not _NAME.match(name):
        raise ModelError(f"model name {name!r} must be letters, digits, '_', '-' or '.', starting with a letter or digit")
    if any(e.name == name and e.family != "onnx" for e in list_models()):
        raise ModelError(f"model name {name!r} is a built-in zoo model; pick another name")
    folder = onnx_models_dir() / name
    if (folder / "entry.json").exists() and not overwrite:
        raise ModelError(f"an ONNX model named {name!r} is already imported ({folder}); pass overwrite=True to replace it")
    source = Path(onnx_file).expanduser()
    if not source.is_file():
        raise ModelError(f"ONNX file {source} does not exist")
    try:
        model = onnx.load(str(source))
    except Exception as e:  # protobuf DecodeError and friends
        raise ModelError(f"{source} is not a readable ONNX file ({type(e).__name__}: {e})") from e
    metadata = _metadata(model)

    model, notes = normalise_onnx(model)
    input_name, channels, (height, width), batch = _input_spec(model)
    if features_node is not None:
        features, how = _resolve_features_node(model, features_node), f"cut at features_node {features_node!r}"
    else:
        features, how = _find_features(model)
    model = _extract(model, input_name, features)
    module = convert_onnx(model)

    side = int(metadata.get("input_size") or height or 224)
    probe_hw = (height or side, width or side)
    diff, reference = check_fidelity(model, module, (batch or 2, channels, *probe_hw))
    if reference.ndim not in (2, 4):
        raise ModelError(
            f"the features ({features!r}) have shape {reference.shape}; a backbone outputs [N, C, H, W] or [N, C]. "
            "Pick another tensor with features_node="
        )
    stride = probe_hw[0] // reference.shape[2] if reference.ndim == 4 else None
    mean = _per_channel(metadata.get("mean", IMAGENET_MEAN))
    std = _per_channel(metadata.get("std", IMAGENET_STD))
    num_params = sum(p.numel() for p in module.parameters())

    folder.mkdir(parents=True, exist_ok=True)
    model_path = atomic_write_bytes(folder / "model.onnx", model.SerializeToString())
    class_names = metadata.get("class_names")
    entry = ModelEntry(
        name=name,
        family="onnx",
        architecture="onnx",
        input_size=side,
        mean=mean,
        std=std,
        categories=tuple(class_names) if class_names else None,
        license="user-supplied",
        sha256=file_sha256(model_path),
        filename=model_path.name,
        description=f"imported from {source.name}",
        num_params=num_params,
        meta={
            "source": str(source.resolve()),
            "output": "feature_map" if reference.ndim == 4 else "vector",
            "channels": int(reference.shape[1]),
            "stride": stride,
            "in_channels": channels,
            "input_hw": [height, width],
            "features": features,
        },
    )
    report = {
        "name": name,
        "source": str(source.resolve()),
        "normalisations": notes,
        "opset": default_opset(model),
        "features": features,
        "how": how,
        "output_shape": list(reference.shape),
        "max_abs_diff": diff,
        "num_params": num_params,
        "weights_made_trainable": module.promoted_buffers,
        "stored": str(folder),
    }
    atomic_write_json(folder / "report.json", report)
    atomic_write_json(folder / "entry.json", entry_to_dict(entry))  # last: its presence marks a complete import
    return entry, report
