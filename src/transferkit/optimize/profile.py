"""How big and how fast a model is: parameters, multiply-accumulates, latency, file size."""
from __future__ import annotations

import os
import statistics
import time
from typing import Any, Callable

import torch
import torch_pruning as tp
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, example_inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> int:
    """Multiply-accumulates of one forward pass on `example_inputs` (a tensor or the model's input tuple)."""
    with torch.no_grad():
        macs, _params = tp.utils.count_ops_and_params(model, example_inputs)
    return int(macs)


def measure_latency_ms(fn: Callable[[Any], Any], inputs: Any, warmup: int = 3, runs: int = 10) -> float:
    """Median wall time of `fn(inputs)` (`fn(*inputs)` for a tuple) in ms: an eager model or an `OnnxModel`."""
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    with torch.inference_mode():
        for _ in range(warmup):
            fn(*args)
        times = []
        for _ in range(runs):
            _sync(args)
            start = time.perf_counter()
            fn(*args)
            _sync(args)
            times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def file_size_bytes(path: str | os.PathLike) -> int:
    return os.path.getsize(path)


def _sync(inputs: tuple) -> None:
    """GPU work is asynchronous: wait for it so the timer measures the computation."""
    for x in inputs:
        if isinstance(x, torch.Tensor) and x.is_cuda:
            torch.cuda.synchronize(x.device)


def onnx_op_profile(path: str | os.PathLike, inputs: Any, runs: int = 100, threads: int = 1) -> dict[str, dict[str, float]]:
    """Where an ONNX model's time goes, by kind of operator, from ONNX Runtime's own profiler
    (SessionOptions.enable_profiling) on the optimised graph it really runs.

    `inputs`: the arrays of one call, as for `OnnxModel`. Returns {kind: {"ms": median kernel ms per call
    summed over the kind's nodes, "nodes": count}}, largest first. Convolutions are split into "conv stem"
    (fed by a graph input), "conv depthwise", "conv 1x1" and "conv kxk"; other nodes go by op type.
    One intra-op thread by default, so a busy machine disturbs the split less."""
    import json
    import tempfile
    from pathlib import Path

    import numpy as np
    import onnx
    import onnxruntime as ort

    from .runtime import _ORT_TYPES

    with tempfile.TemporaryDirectory(prefix="tkit-prof-") as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        options.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        arrays = inputs if isinstance(inputs, tuple) else (inputs,)
        feed = {i.name: np.ascontiguousarray(np.asarray(a), dtype=_ORT_TYPES.get(i.type, np.float32))
                for i, a in zip(session.get_inputs(), arrays)}
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
        kinds = _node_kinds(onnx.load(str(Path(tmp) / "optimised.onnx")).graph)
    per_node: dict[str, list[float]] = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            per_node.setdefault(event["name"][: -len("_kernel_time")], []).append(event["dur"] / 1000.0)
    out: dict[str, dict[str, float]] = {}
    for node, times in per_node.items():
        row = out.setdefault(kinds.get(node, "other"), {"ms": 0.0, "nodes": 0})
        row["ms"] += statistics.median(times)
        row["nodes"] += 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["ms"]))


def _node_kinds(graph: Any) -> dict[str, str]:
    """Node name -> kind, for convolutions of every flavour ORT rewrites them to (Conv, FusedConv, QLinearConv)."""
    initialisers = {t.name: t for t in graph.initializer}
    graph_inputs = {i.name for i in graph.input} - set(initialisers)
    kinds = {}
    for node in graph.node:
        if not node.op_type.endswith("Conv"):
            kinds[node.name] = node.op_type
            continue
        attrs = {a.name: a for a in node.attribute}
        groups = attrs["group"].i if "group" in attrs else 1
        weight = initialisers.get(node.input[3] if node.op_type == "QLinearConv" else node.input[1])
        kernel = list(attrs["kernel_shape"].ints) if "kernel_shape" in attrs else (list(weight.dims[2:]) if weight else [])
        in_per_group = weight.dims[1] if weight is not None and len(weight.dims) > 1 else None
        if node.input[0] in graph_inputs or (in_per_group == 3 and groups == 1):
            kinds[node.name] = "conv stem"
        elif groups > 1:
            kinds[node.name] = "conv depthwise"
        else:
            kinds[node.name] = "conv 1x1" if kernel and all(k == 1 for k in kernel) else "conv kxk"
    return kinds
