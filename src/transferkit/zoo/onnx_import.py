"""Bring your own model: turn a user's ONNX classifier or backbone into a trainable torch backbone.

import_onnx(name, file) normalises the graph into the form onnx2torch reads (onnx_normalise), cuts off the
classifier head, converts it, proves the conversion against onnxruntime, and stores the result
under $TRANSFERKIT_HOME/onnx/<name>/ (model.onnx, entry.json, report.json) so that
`build_backbone(name)` works in any later process.

What the backbone outputs: for a classifier ending in GlobalAveragePool/ReduceMean -> Flatten ->
Gemm/MatMul(+Add), the 4-D map *before* the global pool ([N, C, H, W], so detection heads can use
it too); when no such pool precedes the head, the 2-D vector fed to the head ([N, C]). Without a
recognisable head, the model's own output is taken as the features.

Two more forms (for dense tasks such as segmentation):
- several feature nodes (`features_node=[...]`): an encoder with one [N, C, H, W] map per node, ordered by
  stride; entry.meta holds "features", "channels" and "strides" as lists.
- a whole dense-prediction network (`head_node="auto"` or the node name): its last Conv/ConvTranspose is the
  head a task replaces to match its class count; entry.meta["head"] describes it (`onnx_head`), the stored
  graph outputs both the head's input (the body's features) and the head's output.
"""
from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ModelError
from ..io import atomic_write_bytes, atomic_write_json, describe_missing
from .checksums import file_sha256
from .entry import IMAGENET_MEAN, IMAGENET_STD, ModelEntry, entry_to_dict
from .onnx_normalise import default_opset, normalise_onnx, unsupported_nodes
from .registry import list_models, onnx_models_dir

ATOL, RTOL = 1e-4, 1e-3
_HEAD_PASSTHROUGH = {"Softmax", "LogSoftmax", "Sigmoid", "Identity", "Dropout"}
_GLOBAL_POOLS = {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}
_FLATTENING = {"Flatten", "Reshape", "Squeeze", "Identity", "Dropout"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # whole name (fullmatch): `$` would let a final newline by


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


def _resolve_features_node(model, features_node: str, what: str = "features_node") -> str:
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
    candidates = feature_candidates(model)
    if candidates:
        shown = ", ".join(f"{c['tensor']} (stride {c['stride']}, {c['channels']} ch)" for c in candidates[:6])
        hint += f" Maps where the stride changes: {shown}."
    raise ModelError(f"{what} {features_node!r} is neither a node nor a tensor in the ONNX graph.{hint}")


def _static_shapes(model, probe_hw: tuple[int, int]) -> dict[str, list[int]]:
    """Shape inference with a concrete [1, C, H, W] input: tensor name -> shape (only fully known shapes)."""
    from onnx import shape_inference

    probe = type(model)()
    probe.CopyFrom(model)
    dims = probe.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        return {}
    for dim, value in zip(dims, (1, None, *probe_hw)):
        if value is not None:
            dim.Clear()
            dim.dim_value = value
    try:
        inferred = shape_inference.infer_shapes(probe, data_prop=True)
    except Exception:  # inference gives up on some custom graphs; the hint is then left out
        return {}
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    return shapes


def feature_candidates(model, probe_side: int = 224) -> list[dict[str, Any]]:
    """Tensors where the graph changes resolution (the last map at each stride), first one per stride.

    Each is {"tensor", "node", "stride", "channels"}, sorted by stride: the usual places to cut an
    encoder with features_node=[...]. Global pools (1x1 outputs) do not count as a change.
    """
    inputs = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer}
    fixed = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] if model.graph.input else []
    probe_hw = (fixed[2] or probe_side, fixed[3] or probe_side) if len(fixed) == 4 else (probe_side, probe_side)
    shapes = _static_shapes(model, probe_hw)
    produced_by = _producers(model)
    found: dict[int, dict[str, Any]] = {}
    for node in model.graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if out is None or len(out) != 4 or out[2] <= 1:
            continue
        for name in node.input:
            shape = shapes.get(name)
            if name in inputs or shape is None or len(shape) != 4 or shape[2] in (1, out[2]):
                continue
            stride = max(1, round(probe_hw[0] / shape[2]))
            producer = produced_by.get(name)
            found.setdefault(stride, {"tensor": name, "node": producer.name if producer is not None else "",
                                      "stride": stride, "channels": shape[1]})
    return [found[k] for k in sorted(found)]


def _extractor(model, names: Sequence[str]):
    """An onnx Extractor over `model` that knows a value_info for each of `names` (it needs one per cut)."""
    from onnx import TensorProto, helper, shape_inference
    from onnx.utils import Extractor

    inferred = shape_inference.infer_shapes(model)
    known = {v.name for v in inferred.graph.value_info} | {v.name for v in inferred.graph.output}
    for name in names:
        if name not in known:
            inferred.graph.value_info.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return Extractor(inferred)


def extract_outputs(model, outputs: Sequence[str]):
    """`model` cut down to compute `outputs` (tensor names, in this order) from its one input."""
    if [o.name for o in model.graph.output] == list(outputs):
        return model
    extracted = _extractor(model, outputs).extract_model([model.graph.input[0].name], list(outputs))
    extracted.metadata_props.extend(model.metadata_props)
    return extracted


def split_chain(model, outputs: Sequence[str]) -> list[Any] | None:
    """Graphs input -> outputs[0], outputs[0] -> outputs[1], ...; None when some output needs more than
    the one before it (a skip connection across a cut, an FPN's top-down path)."""
    extractor = _extractor(model, outputs)
    previous = model.graph.input[0].name
    graphs = []
    for name in outputs:
        graph = extractor.extract_model([previous], [name])
        available = {i.name for i in graph.graph.input} | {i.name for i in graph.graph.initializer} | {""}
        for node in graph.graph.node:
            if any(i not in available for i in node.input):
                return None
            available.update(node.output)
        graph.metadata_props.extend(model.metadata_props)
        graphs.append(graph)
        previous = name
    return graphs


# --------------------------------------------------------------------------------------------
# Finding the replaceable head of a dense-prediction network

_HEAD_OPS = {"Conv", "ConvTranspose"}
_TAIL_ACTIVATIONS = {"Sigmoid", "Softmax", "LogSoftmax", "Identity", "Dropout", "ArgMax"}
_RESIZE_OPS = {"Resize", "Upsample"}


def _channel_bias(node, initializers) -> tuple[str, str] | None:
    """(bias initializer, other input) when `node` adds a per-channel constant to an NCHW tensor."""
    if node.op_type != "Add" or len(node.input) != 2:
        return None
    for bias, other in ((node.input[1], node.input[0]), (node.input[0], node.input[1])):
        if bias in initializers and other not in initializers:
            dims = list(initializers[bias].dims)
            # NumPy broadcasting aligns on the right: only [.., K, 1, 1]-like shapes add along channels.
            if len(dims) <= 4 and all(d == 1 for i, d in enumerate([1] * (4 - len(dims)) + dims) if i != 1):
                return bias, other
    return None


def _upsample_mode(node) -> dict[str, Any]:
    """The interpolation a Resize/Upsample node does, as torch's interpolate names it."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    decode = lambda v: v.decode() if isinstance(v, bytes) else v  # noqa: E731
    mode = decode(attrs.get("mode", "nearest"))
    default_ctm = "half_pixel" if node.op_type == "Resize" else "asymmetric"
    ctm = decode(attrs.get("coordinate_transformation_mode", default_ctm))
    torch_modes = {"nearest": "nearest", "linear": "bilinear", "bilinear": "bilinear", "cubic": "bicubic"}
    torch_mode = torch_modes.get(mode, "bilinear")
    return {"mode": torch_mode, "align_corners": ctm == "align_corners", "onnx_mode": mode,
            "coordinate_transformation_mode": ctm}


def _find_head(model, head_node: str) -> dict[str, Any]:
    """The last Conv/ConvTranspose (plus its bias, any resize and final activations after it) of a
    one-output network; head_node is "auto" or that layer's node (or output tensor) name."""
    from onnx import helper

    if len(model.graph.output) != 1:
        raise ModelError(
            f"the ONNX model has {len(model.graph.output)} outputs; head_node= replaces the last layer of a network "
            "with one output"
        )
    initializers = {i.name: i for i in model.graph.initializer}
    produced_by = _producers(model)
    value = model.graph.output[0].name
    node = produced_by.get(value)
    tail = []  # (kind, node) from the output back towards the head
    while node is not None:
        bias = _channel_bias(node, initializers)
        if node.op_type in _TAIL_ACTIVATIONS:
            tail.append(("activation", node))
            value = node.input[0]
        elif node.op_type in _RESIZE_OPS and not any(k == "resize" for k, _ in tail):
            tail.append(("resize", node))
            value = node.input[0]
        elif bias is not None and getattr(produced_by.get(bias[1]), "op_type", None) in _HEAD_OPS:
            tail.append(("bias", node))
            value = bias[1]
        else:
            break
        node = produced_by.get(value)
    found = node if node is not None and node.op_type in _HEAD_OPS and node.input[1] in initializers else None

    if head_node != "auto":
        named = next((n for n in model.graph.node if n.name == head_node or head_node in n.output), None)
        if named is None:
            _resolve_features_node(model, head_node, "head_node")  # raises, with close names
        if found is not None and named is not found:
            after = ", ".join(f"{n.name or n.output[0]} ({n.op_type})" for _, n in reversed(tail)) or "nothing"
            raise ModelError(
                f"head_node {head_node!r} ({named.op_type}) is not the network's last layer: that is {found.op_type} "
                f"{found.name or found.output[0]!r} (followed by {after}); only the last layer can be replaced"
            )
    if found is None:
        stop = f"{node.op_type} {node.name or node.output[0]!r}" if node is not None else f"the graph input {value!r}"
        skipped = f" (after skipping {', '.join(n.op_type for _, n in tail)})" if tail else ""
        raise ModelError(
            f"no replaceable last layer: the output {model.graph.output[0].name!r} comes from {stop}{skipped}; "
            "head_node= needs a network ending in a Conv/ConvTranspose with constant weights producing [N, K, H, W] "
            "(optionally followed by a bias Add, one Resize and Sigmoid/Softmax/ArgMax)"
        )

    head = found
    attrs = {a.name: helper.get_attribute_value(a) for a in head.attribute}
    weight = initializers[head.input[1]]
    dims = list(weight.dims)
    rank = len(dims) - 2
    where = f"the last layer {head.name or head.output[0]!r} ({head.op_type})"
    group = int(attrs.get("group", 1))
    if group != 1:
        raise ModelError(f"{where} is a grouped convolution (group={group}); only group=1 layers can be replaced")
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in ("NOTSET", "VALID"):
        raise ModelError(
            f"{where} uses auto_pad={auto_pad}; only explicit pads can be rebuilt. Re-export with explicit pads"
        )
    if "output_shape" in attrs:
        raise ModelError(f"{where} sets output_shape; only pads/output_padding can be rebuilt. Re-export without it")
    biases = [head.input[2]] if len(head.input) > 2 and head.input[2] else []
    if biases and biases[0] not in initializers:
        raise ModelError(f"{where} has a bias that is computed, not a constant; it cannot be replaced")
    tail_head_first = list(reversed(tail))
    output = head.output[0]
    if tail_head_first and tail_head_first[0][0] == "bias":
        bias_node = tail_head_first.pop(0)[1]
        biases.append(_channel_bias(bias_node, initializers)[0])
        output = bias_node.output[0]
    if any(kind == "bias" for kind, _ in tail_head_first):
        raise ModelError(f"{where} is followed by a bias Add that does not come right after it; re-export the model")
    kinds = [kind for kind, _ in tail_head_first]
    # The logits a rebuilt network can be compared with: before the final activations. None when an
    # activation comes before the resize (a rebuilt network resizes logits, not probabilities).
    if "resize" in kinds and "activation" in kinds[: kinds.index("resize")]:
        logits = None
    else:
        others = [n for kind, n in tail_head_first if kind != "activation"]
        logits = others[-1].output[0] if others else output
    resize = next((n for kind, n in tail_head_first if kind == "resize"), None)
    in_channels, out_channels = (dims[1], dims[0]) if head.op_type == "Conv" else (dims[0], dims[1])
    return {
        "node": head.name or head.output[0],
        "op": head.op_type,
        "input": head.input[0],
        "output": output,
        "weight": head.input[1],
        "biases": biases,
        "in_channels": int(in_channels),
        "out_channels": int(out_channels),
        "kernel_shape": [int(k) for k in attrs.get("kernel_shape", dims[2:])],
        "strides": [int(v) for v in attrs.get("strides", [1] * rank)],
        "pads": [int(v) for v in attrs.get("pads", [0] * 2 * rank)],
        "dilations": [int(v) for v in attrs.get("dilations", [1] * rank)],
        "output_padding": [int(v) for v in attrs.get("output_padding", [0] * rank)],
        "activations": [n.op_type for kind, n in tail_head_first if kind == "activation"],
        "upsample": _upsample_mode(resize) if resize is not None else None,
        "logits": logits,
    }


def onnx_head(entry: ModelEntry) -> dict[str, Any] | None:
    """The replaceable last layer recorded by import_onnx(head_node=...), or None for other entries."""
    return entry.meta.get("head") if entry.family == "onnx" else None


def head_weights(model, head: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """(weight, per-channel bias or None) of the recorded head, read from the stored graph."""
    from onnx import numpy_helper

    initializers = {i.name: i for i in model.graph.initializer}
    missing = [n for n in [head["weight"], *head["biases"]] if n not in initializers]
    if missing:
        raise ModelError(f"the stored ONNX graph lacks the head's tensors {missing}; import the .onnx file again")
    weight = numpy_helper.to_array(initializers[head["weight"]]).astype(np.float32)
    bias = None
    for name in head["biases"]:
        value = np.broadcast_to(numpy_helper.to_array(initializers[name]).astype(np.float32).reshape(-1),
                                (head["out_channels"],))
        bias = value.copy() if bias is None else bias + value
    return weight, bias


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


def convert_feature_stages(model, features: Sequence[str]) -> tuple[list[Any], bool]:
    """(modules, chained) computing `features` (graph outputs, in order) from the graph's input.

    chained: one module per feature, module i reading feature i-1 (so stages freeze one by one);
    otherwise (a feature needs more than the one before it) a single module returning them all.
    """
    graphs = split_chain(model, features)
    if graphs is None:
        return [convert_onnx(model)], False
    return [convert_onnx(graph) for graph in graphs], True


def run_feature_stages(modules: Sequence[Any], chained: bool, x):
    """The list of feature tensors that convert_feature_stages' modules compute for input `x`."""
    if not chained:
        out = modules[0](x)
        return list(out) if isinstance(out, (tuple, list)) else [out]
    features = []
    for module in modules:
        x = module(x)
        features.append(x)
    return features


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


def _probe(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _onnxruntime_outputs(model, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def _compare(ours: np.ndarray, reference: np.ndarray, where: str = "") -> float:
    """Max |ours - reference|; ModelError above ATOL + RTOL * max|reference|."""
    if ours.shape != reference.shape:
        raise ModelError(f"converted model outputs shape {ours.shape}{where}, onnxruntime {reference.shape}")
    diff = float(np.abs(ours - reference).max()) if reference.size else 0.0
    if not diff <= ATOL + RTOL * float(np.abs(reference).max(initial=0.0)):
        raise ModelError(
            f"the converted model disagrees with onnxruntime{where}: max abs difference {diff:.3g} on outputs up to "
            f"{float(np.abs(reference).max(initial=0.0)):.3g}; the conversion is not faithful for this graph"
        )
    return diff


def check_fidelity(model, module, input_shape: tuple[int, ...], seed: int = 0) -> tuple[float, np.ndarray]:
    """Max |onnxruntime - torch| on a random batch; raises ModelError above ATOL + RTOL * max|ref|."""
    import torch

    x = _probe(input_shape, seed)
    reference = _onnxruntime_outputs(model, x)[0]
    module.eval()
    with torch.no_grad():
        ours = module(torch.from_numpy(x))
    ours = ours[0] if isinstance(ours, (tuple, list)) else ours
    return _compare(ours.numpy(), reference), reference


def check_outputs_fidelity(
    model, run: Callable[[Any], list[Any]], input_shape: tuple[int, ...], names: Sequence[str], seed: int = 0
) -> tuple[list[float], list[np.ndarray]]:
    """check_fidelity for every graph output: `run(x)` gives the torch tensors in the graph's output order."""
    import torch

    x = _probe(input_shape, seed)
    references = _onnxruntime_outputs(model, x)
    with torch.no_grad():
        ours = run(torch.from_numpy(x))
    if len(ours) != len(references):
        raise ModelError(f"converted model returns {len(ours)} outputs, onnxruntime {len(references)}")
    diffs = [_compare(o.numpy(), r, f" at {n!r}") for o, r, n in zip(ours, references, names)]
    return diffs, references


# --------------------------------------------------------------------------------------------


def _cut_single(model, probe_shape: tuple[int, ...], features_node: str | None):
    """The one-feature import (the classic BYOM backbone): (stored graph, module, meta, report)."""
    if features_node is not None:
        features, how = _resolve_features_node(model, features_node), f"cut at features_node {features_node!r}"
    else:
        features, how = _find_features(model)
    stored = extract_outputs(model, [features])
    module = convert_onnx(stored)
    diff, reference = check_fidelity(stored, module, probe_shape)
    if reference.ndim not in (2, 4):
        raise ModelError(
            f"the features ({features!r}) have shape {reference.shape}; a backbone outputs [N, C, H, W] or [N, C]. "
            "Pick another tensor with features_node="
        )
    stride = probe_shape[2] // reference.shape[2] if reference.ndim == 4 else None
    meta = {
        "output": "feature_map" if reference.ndim == 4 else "vector",
        "channels": int(reference.shape[1]),
        "stride": stride,
        "features": features,
    }
    report = {"features": features, "how": how, "output_shape": list(reference.shape), "max_abs_diff": diff}
    return stored, [module], meta, report


def _cut_multi(model, probe_shape: tuple[int, ...], nodes: list[str]):
    """Several feature maps, one per stride, ordered by stride: (stored graph, modules, meta, report)."""
    tensors = [_resolve_features_node(model, node, "features node") for node in nodes]
    for i, tensor in enumerate(tensors):
        if tensor in tensors[:i]:
            raise ModelError(
                f"features nodes {nodes[tensors.index(tensor)]!r} and {nodes[i]!r} are the same tensor {tensor!r}; "
                "name each map once"
            )
    references = _onnxruntime_outputs(extract_outputs(model, tensors), _probe(probe_shape))
    produced_by = _producers(model)
    for node, tensor, reference in zip(nodes, tensors, references):
        if reference.ndim != 4:
            raise ModelError(
                f"features node {node!r} outputs shape {list(reference.shape)}, not a feature map [N, C, H, W]; "
                "every features node must output one (cut before pooling or flattening)"
            )
        producer = produced_by.get(tensor)
        pooled = producer is not None and (producer.op_type in _GLOBAL_POOLS or _is_spatial_mean(model, producer))
        if pooled or (reference.shape[2] == reference.shape[3] == 1 and min(probe_shape[2:]) > 32):
            raise ModelError(
                f"features node {node!r} outputs a pooled {list(reference.shape)} tensor, not a feature map; "
                "cut before the global pooling"
            )
    strides = [max(1, round(probe_shape[2] / r.shape[2])) for r in references]
    for i, stride in enumerate(strides):
        if stride in strides[:i]:
            j = strides.index(stride)
            raise ModelError(
                f"features nodes {nodes[j]!r} {list(references[j].shape)} and {nodes[i]!r} {list(references[i].shape)} "
                f"both have stride {stride}; name one map per stride"
            )
    order = sorted(range(len(nodes)), key=strides.__getitem__)
    nodes, tensors = [nodes[i] for i in order], [tensors[i] for i in order]
    strides, shapes = [strides[i] for i in order], [list(references[i].shape) for i in order]
    stored = extract_outputs(model, tensors)
    modules, chained = convert_feature_stages(stored, tensors)
    for module in modules:
        module.eval()
    diffs, _ = check_outputs_fidelity(stored, lambda x: run_feature_stages(modules, chained, x), probe_shape, nodes)
    channels = [shape[1] for shape in shapes]
    meta = {"output": "feature_maps", "features": tensors, "feature_nodes": nodes, "channels": channels,
            "strides": strides, "chained": chained}
    how = (f"{len(nodes)} feature maps at strides {strides}, "
           + ("one stage per map (each map computed from the previous one)" if chained
              else "one module for all maps (a map needs more than the previous one, so stages cannot be split)"))
    report = {"features": tensors, "feature_nodes": nodes, "how": how, "strides": strides, "channels": channels,
              "output_shapes": shapes, "max_abs_diffs": diffs, "max_abs_diff": max(diffs), "chained": chained}
    return stored, modules, meta, report


def _cut_head(model, probe_shape: tuple[int, ...], head_node: str):
    """A whole dense-prediction network whose last layer a task replaces: (stored graph, module, meta, report).

    The stored graph outputs the head's input (the body's features) and the head's output (with its bias).
    """
    head = _find_head(model, head_node)
    stored = extract_outputs(model, [head["input"], head["output"]])
    module = convert_onnx(stored).eval()
    diffs, (body, logits) = check_outputs_fidelity(
        stored, lambda x: list(module(x)), probe_shape, ["head input " + head["input"], "head output " + head["output"]]
    )
    if body.ndim != 4 or logits.ndim != 4:
        raise ModelError(
            f"the last layer {head['node']!r} maps {list(body.shape)} to {list(logits.shape)}; head_node= needs "
            "[N, C, H, W] -> [N, K, H', W'] (a dense-prediction network)"
        )
    stride = max(1, round(probe_shape[2] / body.shape[2]))
    meta = {"output": "feature_map", "channels": int(body.shape[1]), "stride": stride, "features": head["input"],
            "head": head}
    after = []
    if head["upsample"]:
        after.append(f"{head['upsample']['onnx_mode']} Resize (redone as an upsampling to the input size)")
    if head["activations"]:
        after.append(f"{', '.join(head['activations'])} (left out: a task trains on logits)")
    how = (f"body cut before the {head['op']} head {head['node']!r} "
           f"({head['in_channels']} -> {head['out_channels']} channels, kernel {head['kernel_shape']}, "
           f"strides {head['strides']}){'; after it: ' + ', '.join(after) if after else ''}")
    report = {"features": head["input"], "how": how, "head": head, "output_shape": list(body.shape),
              "head_output_shape": list(logits.shape), "max_abs_diffs": diffs, "max_abs_diff": max(diffs)}
    return stored, [module], meta, report


def import_onnx(
    name: str,
    onnx_file: str | os.PathLike,
    features_node: str | Sequence[str] | None = None,
    overwrite: bool = False,
    head_node: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> tuple[ModelEntry, dict[str, Any]]:
    """Convert and register a user's ONNX model as backbone `name`; returns (entry, report).

    features_node: where to cut (node or tensor name); a list of several makes a multi-stride encoder.
    head_node: "auto" or the node name of the last Conv/ConvTranspose of a dense-prediction network,
    recorded so a task can rebuild the network with its own class count (see onnx_head).
    mean, std: the input normalisation of [0, 1] pixels (1 or 3 values), over the file's metadata;
    without either, ImageNet's.
    """
    import onnx

    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ModelError(f"model name {name!r} must be letters, digits, '_', '-' or '.', starting with a letter or digit "
                         "(no spaces, control characters or path separators)")
    if any(e.name == name and e.family != "onnx" for e in list_models()):
        raise ModelError(f"model name {name!r} is a built-in zoo model; pick another name")
    nodes = [features_node] if isinstance(features_node, str) else None
    if features_node is not None and nodes is None:
        nodes = list(features_node)
    if nodes is not None and (not nodes or not all(isinstance(n, str) and n for n in nodes)):
        raise ModelError(f"features_node must name one or more nodes, got {features_node!r}")
    for key, values in (("mean", mean), ("std", std)):
        if values is not None and (len(values) not in (1, 3) or (key == "std" and min(values) <= 0)):
            raise ModelError(f"{key} must be 1 or 3 numbers{' above 0' if key == 'std' else ''}, got {list(values)}")
    if nodes is not None and head_node is not None:
        raise ModelError("features_node (--features) and head_node (--head) do not go together: cut an encoder at "
                         "feature nodes, or keep the whole network and replace its last layer")
    folder = onnx_models_dir() / name
    if (folder / "entry.json").exists() and not overwrite:
        raise ModelError(f"an ONNX model named {name!r} is already imported ({folder}); pass --overwrite "
                         "(overwrite=True in Python) to replace it, or pick another name")
    source = Path(onnx_file).expanduser()
    if not source.is_file():
        raise ModelError(f"ONNX file {source} {describe_missing(source)}")
    try:
        model = onnx.load(str(source))
    except Exception as e:  # protobuf DecodeError and friends
        raise ModelError(f"{source} is not a readable ONNX file ({type(e).__name__}: {e})") from e
    metadata = _metadata(model)

    model, notes = normalise_onnx(model)
    _, channels, (height, width), batch = _input_spec(model)
    side = int(metadata.get("input_size") or height or 224)
    probe_shape = (batch or 2, channels, height or side, width or side)
    if head_node is not None:
        stored, modules, cut_meta, cut_report = _cut_head(model, probe_shape, head_node)
    elif nodes is not None and len(nodes) > 1:
        stored, modules, cut_meta, cut_report = _cut_multi(model, probe_shape, nodes)
    else:
        stored, modules, cut_meta, cut_report = _cut_single(model, probe_shape, nodes and nodes[0])
    mean = _per_channel(mean if mean is not None else metadata.get("mean", IMAGENET_MEAN))
    std = _per_channel(std if std is not None else metadata.get("std", IMAGENET_STD))
    num_params = sum(p.numel() for module in modules for p in module.parameters())

    folder.mkdir(parents=True, exist_ok=True)
    model_path = atomic_write_bytes(folder / "model.onnx", stored.SerializeToString())
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
        meta={"source": str(source.resolve()), **cut_meta, "in_channels": channels, "input_hw": [height, width]},
    )
    report = {
        "name": name,
        "source": str(source.resolve()),
        "normalisations": notes,
        "opset": default_opset(model),
        **cut_report,
        "num_params": num_params,
        "weights_made_trainable": sum(m.promoted_buffers for m in modules),
        "stored": str(folder),
    }
    atomic_write_json(folder / "report.json", report)
    atomic_write_json(folder / "entry.json", entry_to_dict(entry))  # last: its presence marks a complete import
    return entry, report
