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
from typing import Iterable, Iterator, Sequence

import numpy as np
import onnx
import torch
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from ..errors import DataError, ModelError
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
) -> Path:
    """Write an INT8 (QDQ) copy of the ONNX model at `fp32_path`, calibrated on `calibration` batches.

    A batch is one array per model input (a single array for a one-input model, or a tuple or a
    dict by input name), preprocessed like inference inputs; a few hundred samples are plenty. The FP32 model's metadata_props are kept, plus `precision: int8`.
    `op_types` limits quantisation to those operators (e.g. ["Conv"] keeps a detector's box decoding
    and scores in float); None quantises every operator ONNX Runtime supports. `target`: cpu | tensorrt
    (module docstring) | dynamic (quantize_int8_dynamic; `calibration` is not read). `exclude_nodes`:
    ONNX node names left in float; None means the target's choice: for cpu, convolutions that read a
    graph input directly (an image stem with 3 input channels runs slower in INT8; see above).
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
            exclude_nodes = _input_convs(source, Path(tmp) / "named.onnx") if target == "cpu" else []
            source = Path(tmp) / "named.onnx" if exclude_nodes else source
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


def _input_convs(model_path: Path, named_path: Path) -> list[str]:
    """Names of the Conv nodes fed directly by a graph input (unnamed ones get a name, and the model is
    rewritten to `named_path` when any is found)."""
    model = onnx.load(str(model_path))
    graph = model.graph
    inputs = {i.name for i in graph.input} - {t.name for t in graph.initializer}
    found = []
    for index, node in enumerate(graph.node):
        if node.op_type == "Conv" and node.input and node.input[0] in inputs:
            node.name = node.name or f"tkit_input_conv_{index}"
            found.append(node.name)
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
