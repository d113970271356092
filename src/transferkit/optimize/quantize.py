"""INT8 post-training quantisation of an ONNX model with ONNX Runtime, calibrated on real batches.

The result is a QDQ model (QuantizeLinear/DequantizeLinear pairs around int8 weights) in one of two
flavours (`target`):

  cpu       uint8 activations (asymmetric) x int8 per-channel weights: what ONNX Runtime's x86 kernels
            are fastest with (U8S8). On this project's 2-core AMD EPYC, for the demo's MobileNetV2 at 96 px,
            int8 activations (S8S8) ran at 2.96 ms (batch 1) against 1.45 ms for FP32, and uint8 ones at
            1.09 ms, with the same top-1.
  tensorrt  int8 activations, symmetric (zero point 0), int8 symmetric weights: the QDQ form TensorRT
            builds an INT8 engine from. ONNX Runtime runs it too, more slowly on x86.

Where the INT8 time goes on the CPU (ONNX Runtime 1.32, 1 intra-op thread, the demo's MobileNetV2 at 96 px
pruned at prune.ratio=0.5; per-node median kernel times from SessionOptions.enable_profiling, 300 runs;
FP32 -> INT8 ms per batch-1 call):

  1x1 convs (34)          0.487 -> 0.283   where INT8 pays
  depthwise 3x3 (17)      0.172 -> 0.212   slower in INT8 than FP32's NCHWc kernel; keeping them in FP32
                                           costs more in Q/DQ pairs than it saves (measured 0.347 -> 0.375 ms)
  stem 3x3, 3 inputs (1)  0.030 -> 0.062   twice as slow in INT8: kept in FP32 for target cpu (below)
  Add (10, residuals)     fused   -> 0.044  QLinearAdd; leaving Adds in float was far worse (0.96 ms: DQ/Q
                                           around every residual)
  Q/DQ + layout (6)       -       -> 0.030

Whole calls (interleaved, min over rounds of the median): FP32 0.46 ms, INT8 with every conv 0.39 ms
(1.17x), INT8 with the stem conv in FP32 0.35 ms (1.32x). For the unpruned network the 1x1 convs are a
larger share and INT8 gives 1.6x. So the ~1.5x INT8 target on a pruned MobileNetV2 at batch 1 is held
back by the depthwise convolutions, which ONNX Runtime's x86 INT8 kernels run no faster than FP32.
"""
from __future__ import annotations

import itertools
import logging
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import onnx
import torch
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from ..errors import DataError, ModelError, SpecError
from ..io import atomic_write_bytes
from .export import set_metadata

log = logging.getLogger(__name__)

_CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


_TARGETS = {
    "cpu": {"activation_type": QuantType.QUInt8, "extra_options": {"WeightSymmetric": True}},
    "tensorrt": {"activation_type": QuantType.QInt8,
                 "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True}},
}


# What each target keeps in float unless told otherwise (exclude_nodes): on the CPU, a stem convolution reading
# the image directly (3 input channels) runs slower in INT8 than in FP32 (module docstring).
TARGET_FLOAT: dict[str, tuple[str, ...]] = {"cpu": ("conv stem",), "tensorrt": (), "dynamic": ()}


class _Batches(CalibrationDataReader):
    """Feeds calibration batches to ORT's calibrator, each checked against the model's inputs.

    A batch is one array (a single-input model) or a tuple/dict of arrays, one per graph input; each is
    cast to the dtype its input declares, so token ids stay integers."""

    def __init__(self, batches: Iterator, inputs: list[tuple[str, list[int | None], type]], source: Path):
        self.batches, self.inputs, self.source = batches, inputs, source
        self.count = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        if batch is None:
            return None
        if isinstance(batch, dict):
            named = batch
        else:
            arrays = batch if isinstance(batch, (tuple, list)) else (batch,)
            if len(arrays) != len(self.inputs):
                raise DataError(f"calibration batch {self.count} has {len(arrays)} array(s), but {self.source.name} "
                                f"takes {len(self.inputs)} input(s): {', '.join(n for n, _, _ in self.inputs)}")
            named = {name: a for (name, _, _), a in zip(self.inputs, arrays)}
        feed = {}
        for name, shape, dtype in self.inputs:
            if name not in named:
                raise DataError(f"calibration batch {self.count} has no array for input {name!r} of {self.source.name}")
            array = np.ascontiguousarray(np.asarray(named[name]), dtype=dtype)
            fixed = [(i, d) for i, d in enumerate(shape) if d is not None]
            if array.ndim != len(shape) or any(array.shape[i] != d for i, d in fixed):
                expected = ["N" if d is None else d for d in shape]
                raise DataError(
                    f"calibration batch {self.count} gives input {name!r} the shape {list(array.shape)}, but "
                    f"{self.source.name} expects {expected}: feed inputs preprocessed the same way as for inference"
                )
            feed[name] = array
        self.count += 1
        return feed


def quantize_int8(
    fp32_path: str | Path,
    int8_path: str | Path,
    calibration: Iterable[np.ndarray],
    per_channel: bool = True,
    method: str = "minmax",
    max_batches: int | None = None,
    op_types: Sequence[str] | None = None,
    target: str = "cpu",
    exclude_nodes: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> Path:
    """Write an INT8 (QDQ) copy of the ONNX model at `fp32_path`, calibrated on `calibration` batches.

    A batch is one array per model input (a single array for a one-input model, or a tuple or a
    dict by input name), preprocessed like inference inputs; a few hundred samples are plenty. The FP32 model's metadata_props are kept, plus `precision: int8`.
    `op_types` limits quantisation to those operators (e.g. ["Conv"] keeps a detector's box decoding
    and scores in float); None quantises every operator ONNX Runtime supports. `target`: cpu | tensorrt
    (module docstring) | dynamic (quantize_int8_dynamic; `calibration` is not read). `exclude_nodes`:
    what is left in float, each entry an ONNX operator type ("ConvTranspose"), a convolution kind of
    `onnx_op_profile` ("conv depthwise", "conv 1x1", "conv kxk", "conv stem": a convolution reading the
    image) or a node name; None means the target's choice (TARGET_FLOAT). `exclude`: more of the same, on top
    (a user's list, export.int8_exclude): an entry there that matches no node is a SpecError naming what the
    model has, while `exclude_nodes` entries may match nothing.
    """
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    if target == "dynamic":
        return quantize_int8_dynamic(fp32_path, int8_path, op_types)
    if target not in _TARGETS:
        raise ModelError(f"INT8 target must be one of {', '.join(_TARGETS)}, dynamic, got {target!r}")
    if method not in _CALIBRATION_METHODS:
        raise ModelError(f"INT8 calibration method must be one of {', '.join(_CALIBRATION_METHODS)}, got {method!r}")
    try:
        fp32 = onnx.load(str(fp32_path))
    except Exception as e:
        raise ModelError(f"{fp32_path} is not a readable ONNX model: {type(e).__name__}") from e
    initialisers = {t.name for t in fp32.graph.initializer}
    inputs = [(i.name, [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim],
               onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type))
              for i in fp32.graph.input if i.name not in initialisers]

    batches = iter(calibration)
    if max_batches is not None:
        batches = itertools.islice(batches, max_batches)
    first = next(batches, None)
    if first is None:
        raise DataError(f"INT8 calibration of {fp32_path.name} got no batches: pass at least one batch of inputs")
    reader = _Batches(itertools.chain([first], batches), inputs, fp32_path)

    with tempfile.TemporaryDirectory(prefix="tkit-int8-") as tmp:
        source, quantised = Path(tmp) / "prep.onnx", Path(tmp) / "int8.onnx"
        try:
            # Shape inference plus graph fusion (Conv+BatchNorm): calibration then sees the
            # deployed graph and every weight is quantised once.
            quant_pre_process(str(fp32_path), str(source))
        except Exception as e:
            log.warning("quantisation pre-processing of %s failed (%s); quantising it as exported", fp32_path, e)
            source = fp32_path
        if exclude_nodes is None:
            exclude_nodes = TARGET_FLOAT[target]
        wanted = [*exclude_nodes, *exclude]
        if wanted:
            named = Path(tmp) / "named.onnx"
            exclude_nodes = float_nodes(source, named, wanted, strict=list(exclude), label=fp32_path.name)
            source = named if exclude_nodes else source
        try:
            quantize_static(
                str(source), str(quantised), reader,
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=_TARGETS[target]["activation_type"],
                weight_type=QuantType.QInt8,
                extra_options=_TARGETS[target]["extra_options"],
                calibrate_method=_CALIBRATION_METHODS[method],
                op_types_to_quantize=list(op_types) if op_types else None,
                nodes_to_exclude=list(exclude_nodes),
            )
        except DataError:
            raise
        except Exception as e:
            raise ModelError(f"INT8 quantisation of {fp32_path} failed: {type(e).__name__}: {str(e).strip()[:300]}") from e
        int8 = onnx.load(str(quantised))

    del int8.metadata_props[:]
    set_metadata(int8, {p.key: p.value for p in fp32.metadata_props})
    set_metadata(int8, {"precision": "int8", "int8_target": target, "calibration_batches": str(reader.count)})
    if exclude_nodes:
        set_metadata(int8, {"float_nodes": list(exclude_nodes)})
    return atomic_write_bytes(int8_path, int8.SerializeToString())


# INT8 kernels under the name of the float operator they replace, so a profile of each can be compared.
_FLOAT_NAME = {"QLinearConvTranspose": "ConvTranspose", "QGemm": "Gemm", "QLinearMatMul": "MatMul",
               "MatMulInteger": "MatMul", "QLinearMul": "Mul", "QLinearGlobalAveragePool": "GlobalAveragePool",
               "QLinearAveragePool": "AveragePool", "QLinearConcat": "Concat", "QLinearSigmoid": "Sigmoid",
               "QLinearLeakyRelu": "LeakyRelu", "QLinearSoftmax": "Softmax"}


def int8_losers(fp32: dict[str, dict[str, float]], int8: dict[str, dict[str, float]], margin: float = 0.05) -> list[str]:
    """The operator kinds INT8 runs slower than FP32, the largest loss first, from two `onnx_op_profile` results.

    A kind counts when both profiles have it (INT8 kernels under their float name, e.g. QGemm as Gemm) and its
    INT8 time exceeds FP32's by more than `margin` (a fraction). Kinds found in one profile only (Q/DQ, layout
    changes, QLinearAdd where FP32 fused the Add into a convolution) cannot be kept in float by themselves and
    are left out."""
    int8_ms: dict[str, float] = {}
    for kind, row in int8.items():
        name = _FLOAT_NAME.get(kind, kind)
        int8_ms[name] = int8_ms.get(name, 0.0) + row["ms"]
    losses = {kind: int8_ms[kind] - row["ms"] for kind, row in fp32.items()
              if kind in int8_ms and int8_ms[kind] > row["ms"] * (1 + margin)}
    return sorted(losses, key=lambda kind: -losses[kind])


def profile_total_ms(profile: dict[str, dict[str, float]]) -> float:
    """Kernel ms of one call, all operators together, from an `onnx_op_profile` result."""
    return sum(row["ms"] for row in profile.values())


def quantize_int8_auto(
    fp32_path: str | Path,
    int8_path: str | Path,
    calibration: Sequence,
    probe: Any,
    exclude: Sequence[str] = (),
    runs: int = 50,
    margin: float = 0.02,
    **options: Any,
) -> tuple[Path, dict[str, Any]]:
    """`quantize_int8`, then keep in float each operator kind INT8 makes slower, while that speeds the model up.

    Both models are profiled per operator kind at `probe` (one batch-1 input, as for `onnx_op_profile`). The
    kinds `int8_losers` names are tried one at a time, the largest loss first: a kind stays in float when the
    re-quantised model's kernel time per call is more than `margin` below the best so far (keeping a kind in
    float adds Q/DQ pairs around it, which can cost more than it saves). `calibration` is read once per try,
    so it must be a sequence. Returns the INT8 file and the decision (what export_report.json records as
    int8_auto; the file's metadata gets it too)."""
    from .profile import onnx_op_profile

    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    if options.get("target", "cpu") != "cpu":
        raise ModelError("INT8 auto exclusion times ONNX Runtime on this CPU: it needs int8_target cpu")
    fp32_profile = onnx_op_profile(fp32_path, probe, runs=runs)
    fp32_ms = profile_total_ms(fp32_profile)
    with tempfile.TemporaryDirectory(prefix="tkit-int8-auto-") as tmp:
        best = quantize_int8(fp32_path, Path(tmp) / "try0.onnx", calibration, exclude=exclude, **options)
        first_profile = onnx_op_profile(best, probe, runs=runs)
        best_ms = profile_total_ms(first_profile)
        # only what names nodes of the model: not the layout changes ONNX Runtime adds (ReorderOutput ...)
        losers = [kind for kind in int8_losers(fp32_profile, first_profile) if kind in _selectable(fp32_path)]
        kept: list[str] = []
        tries = [{"float": [], "ms": round(best_ms, 4)}]
        base = options.pop("exclude_nodes", None)
        base = list(TARGET_FLOAT["cpu"] if base is None else base)
        for index, kind in enumerate(losers, 1):
            candidate = quantize_int8(fp32_path, Path(tmp) / f"try{index}.onnx", calibration, exclude=exclude,
                                      exclude_nodes=[*base, *kept, kind], **options)
            ms = profile_total_ms(onnx_op_profile(candidate, probe, runs=runs))
            tries.append({"float": [*kept, kind], "ms": round(ms, 4)})
            if ms < best_ms * (1 - margin):
                best, best_ms = candidate, ms
                kept.append(kind)
        decision = {"fp32_ms": round(fp32_ms, 4), "int8_ms": round(best_ms, 4), "slower_in_int8": losers,
                    "kept_in_float": kept, "tries": tries, "faster_than_fp32": best_ms < fp32_ms,
                    "by_kind_ms": {k: [round(r["ms"], 4), round(first_profile.get(k, {}).get("ms", 0.0), 4)]
                                   for k, r in fp32_profile.items()}}
        model = onnx.load(str(best))
        set_metadata(model, {"int8_auto": {k: decision[k] for k in ("fp32_ms", "int8_ms", "kept_in_float")}})
        written = atomic_write_bytes(int8_path, model.SerializeToString())
    if not decision["faster_than_fp32"]:
        # Kernel sums at one thread, not whole calls: on a small model (MobileNetV2 at 64 px) INT8 lost here yet
        # won whole calls at ONNX Runtime's default threads, so this only points at the export report's latencies.
        log.warning("INT8 auto exclusion: %s's kernels still take %.3f ms per batch-1 call (1 thread) against %.3f ms "
                    "in FP32; compare latency_ms_batch1 of onnx_int8 and onnx_fp32 in export_report.json before "
                    "deploying it", int8_path.name, best_ms, fp32_ms)
    return written, decision


def _selectable(model_path: Path) -> set[str]:
    """The operator types and convolution kinds of a model's nodes: what `exclude` entries can name besides nodes."""
    from .profile import _node_kinds

    graph = onnx.load(str(model_path)).graph
    return {n.op_type for n in graph.node} | set(_node_kinds(graph).values())


def float_nodes(model_path: Path, named_path: Path, entries: Sequence[str], strict: Sequence[str] = (),
                label: str | None = None) -> list[str]:
    """Names of the nodes `entries` select (operator types, convolution kinds, node names), in graph order.

    Unnamed nodes get a name, and the model is rewritten to `named_path` when any node is selected. An entry
    in `strict` that selects nothing raises SpecError (a typo must not pass silently); others may select nothing
    (the cpu target's "conv stem" on a model whose first layer is not a convolution)."""
    from .profile import _node_kinds

    model = onnx.load(str(model_path))
    graph = model.graph
    for index, node in enumerate(graph.node):
        node.name = node.name or f"tkit_{node.op_type.lower()}_{index}"
    kinds = _node_kinds(graph)
    found = [n.name for n in graph.node if n.op_type in entries or n.name in entries or kinds.get(n.name) in entries]
    for entry in strict:
        if not any(entry in (n.op_type, n.name, kinds.get(n.name)) for n in graph.node):
            present = sorted({n.op_type for n in graph.node} | {k for k in kinds.values() if k.startswith("conv ")})
            raise SpecError(f"export.int8_exclude: {entry!r} is no operator type, convolution kind or node name of "
                            f"{label or model_path.name}; it has {', '.join(present)}")
    if found:
        onnx.save(model, str(named_path))
    return found


def quantize_int8_dynamic(fp32_path: str | Path, int8_path: str | Path, op_types: Sequence[str] | None = None) -> Path:
    """INT8 weights with activations quantised per batch at run time (ONNX Runtime's dynamic quantisation).

    What transformer encoders use on CPUs: their MatMul activations vary too much per sentence for one
    calibrated scale, and no calibration data is needed. `op_types` defaults to ["MatMul", "Gemm"]."""
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    try:
        fp32 = onnx.load(str(fp32_path))
    except Exception as e:
        raise ModelError(f"{fp32_path} is not a readable ONNX model: {type(e).__name__}") from e
    with tempfile.TemporaryDirectory(prefix="tkit-int8-") as tmp:
        quantised = Path(tmp) / "int8.onnx"
        try:
            quantize_dynamic(str(fp32_path), str(quantised), weight_type=QuantType.QInt8, per_channel=False,
                             op_types_to_quantize=list(op_types or ("MatMul", "Gemm")))
        except Exception as e:
            raise ModelError(f"INT8 quantisation of {fp32_path} failed: {type(e).__name__}: {str(e).strip()[:300]}") from e
        int8 = onnx.load(str(quantised))
    del int8.metadata_props[:]
    set_metadata(int8, {p.key: p.value for p in fp32.metadata_props})
    set_metadata(int8, {"precision": "int8", "int8_target": "dynamic"})
    return atomic_write_bytes(int8_path, int8.SerializeToString())


class TransposedLinear(torch.nn.Module):
    """nn.Linear as x @ W^T + b with W^T stored. Exported without constant folding, a plain nn.Linear becomes
    MatMul(x, Transpose(W)), and dynamic INT8 quantises only MatMuls that read a weight initializer directly: it
    left all 42 of MiniLM's encoder MatMuls in float."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.weight_t = torch.nn.Parameter(linear.weight.detach().t().contiguous(), requires_grad=False)
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.matmul(x, self.weight_t)
        return y if self.bias is None else y + self.bias


def with_transposed_linears(net: torch.nn.Module) -> torch.nn.Module:
    """An eval copy of `net` whose nn.Linear layers are TransposedLinear: the same outputs, a graph whose MatMuls
    `quantize_int8_dynamic` can quantise. The network itself is not changed."""
    import copy

    graph = copy.deepcopy(net).eval()
    for parent in list(graph.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear:
                setattr(parent, name, TransposedLinear(child))
    return graph
