"""Rewrite an ONNX graph into the form onnx2torch reads: one small function per form it cannot.

Forms handled: weights as Constant nodes, weights shared through Identity nodes (the legacy
exporter's constant folding), initializers listed as graph inputs (keep_initializers_as_inputs),
opsets below 13 (lifted) and above 17 when onnx2torch lacks the newer operator versions (lowered,
e.g. the dynamo exporter's ReduceMean-18).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ModelError

# onnx2torch has converters for the widest set of operators at opset 13; older models are lifted to it.
MIN_OPSET = 13
# Newer opsets change operator signatures onnx2torch does not read yet (ReduceMean-18 takes axes as
# an input); such models are lowered to this opset when the operators allow it.
MAX_OPSET = 17



def default_opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _drop_initializer_inputs(model) -> int:
    """keep_initializers_as_inputs=True lists every weight as a graph input: keep only real inputs."""
    names = {init.name for init in model.graph.initializer}
    weights = [i for i in model.graph.input if i.name in names]
    for value in weights:
        model.graph.input.remove(value)
    return len(weights)


def _constants_to_initializers(model) -> int:
    """Weights stored as Constant nodes become initializers (onnx2torch's Conv/Gemm need initializers)."""
    from onnx import helper, numpy_helper

    outputs = {o.name for o in model.graph.output}
    moved = 0
    for node in list(model.graph.node):
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or node.output[0] in outputs:
            continue
        attr = node.attribute[0] if len(node.attribute) == 1 else None
        if attr is None:
            continue
        if attr.name == "value":
            tensor = numpy_helper.to_array(attr.t)
        elif attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
            dtype = np.float32 if "float" in attr.name else np.int64
            tensor = np.array(helper.get_attribute_value(attr), dtype=dtype)
        else:
            continue  # sparse and string constants stay nodes
        model.graph.initializer.append(numpy_helper.from_array(tensor, name=node.output[0]))
        model.graph.node.remove(node)
        moved += 1
    return moved


def _fold_initializer_identities(model) -> int:
    """Identity(initializer) -> a copy of the initializer under the Identity's output name.

    The legacy exporter with constant folding shares equal weights through Identity nodes, which
    onnx2torch cannot follow (KeyError on the weight name, or BatchNorm left with buffers).
    """
    outputs = {o.name for o in model.graph.output}
    initializers = {init.name: init for init in model.graph.initializer}
    folded = 0
    changed = True
    while changed:
        changed = False
        for node in list(model.graph.node):
            if node.op_type == "Identity" and node.input[0] in initializers and node.output[0] not in outputs:
                copy = type(initializers[node.input[0]])()
                copy.CopyFrom(initializers[node.input[0]])
                copy.name = node.output[0]
                model.graph.initializer.append(copy)
                initializers[copy.name] = copy
                model.graph.node.remove(node)
                folded += 1
                changed = True
    return folded


def unsupported_nodes(model) -> list[tuple[str, str]]:
    """(op_type, node name) of every node onnx2torch has no converter for at the model's opset."""
    from onnx2torch.node_converters import get_converter

    versions = {o.domain or "": o.version for o in model.opset_import}
    missing = []
    for index, node in enumerate(model.graph.node):
        domain = "" if node.domain == "ai.onnx" else node.domain
        try:
            get_converter(operation_type=node.op_type, version=versions.get(domain, 0), domain=domain)
        except NotImplementedError:
            missing.append((node.op_type if not domain else f"{domain}.{node.op_type}", node.name or f"#{index}"))
    return missing


def _convert_opset(model, target: int):
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, target)
    except Exception:  # the converter raises RuntimeError/IndexError/... for operators it cannot adapt
        return None
    if target < 18:
        # Lowering Reduce*-18 moves `axes` back to an attribute but leaves the opset-18-only
        # `noop_with_empty_axes` behind, which the checker rejects; at its default 0 it means nothing.
        for node in converted.graph.node:
            if node.op_type.startswith("Reduce"):
                for attr in list(node.attribute):
                    if attr.name == "noop_with_empty_axes" and attr.i == 0:
                        node.attribute.remove(attr)
    return converted


def normalise_onnx(model) -> tuple[Any, list[str]]:
    """Rewrite `model` (an onnx ModelProto) into the form onnx2torch reads; returns (model, notes)."""
    import onnx

    notes: list[str] = []
    if n := _drop_initializer_inputs(model):
        notes.append(f"removed {n} initializers listed as graph inputs")
    opset = default_opset(model)
    target = MIN_OPSET if opset < MIN_OPSET else MAX_OPSET if opset > MAX_OPSET and unsupported_nodes(model) else None
    if target is not None:
        converted = _convert_opset(model, target)
        if converted is not None:
            model = converted
            notes.append(f"converted opset {opset} -> {target}")
        else:
            notes.append(f"kept opset {opset}: onnx's version converter could not convert it to {target}")
    if n := _constants_to_initializers(model):
        notes.append(f"moved {n} Constant nodes into initializers")
    if n := _fold_initializer_identities(model):
        notes.append(f"replaced {n} Identity nodes on weights with copies of the weights")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ModelError(f"the ONNX model is invalid after normalisation: {str(e).strip().splitlines()[0]}") from e
    return model, notes
