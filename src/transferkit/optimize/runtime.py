"""Run an exported `.onnx` model with ONNX Runtime: the inference path for `-m model.onnx`."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from ..errors import ModelError, first_line
from ..io import describe_missing

# ONNX Runtime's messages for operators it has no kernel for, e.g.
#   "No Op registered for FooBar with domain_version of 17"
#   "Fatal error: com.acme:Baz(-1) is not a registered function/op"
#   "Could not find an implementation for Foo(13) node with name 'n'"
_UNSUPPORTED_OP = [
    re.compile(r"No Op registered for (\S+) with domain_version of (\d+)"),
    re.compile(r"Op registered for (\S+) is deprecated in domain_version of (\d+)"),
    re.compile(r"Fatal error: (\S+?)\((-?\d+)\) is not a registered function/op"),
    re.compile(r"Could not find an implementation for (\S+?)\((\d+)\)"),
]


def default_providers() -> list[str]:
    """CUDA first when this onnxruntime build has it, then the CPU."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


# ONNX Runtime's type names -> numpy dtypes, for the inputs a model declares.
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8,
              "tensor(int8)": np.int8, "tensor(bool)": np.bool_}


class OnnxModel:
    """An ONNX file ready to run; `model(*inputs)` (arrays in the graph's input order, or one dict by name)
    returns every output. Each array is cast to the dtype its graph input declares (token ids stay int64)."""

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] | None = None, threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"ONNX model {self.path} {describe_missing(self.path)}: pass an existing .onnx file with -m")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # errors only: ORT's warnings about initialisers are noise here
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=list(providers or default_providers()))
        except Exception as e:  # ORT raises its own exception types, none shared with Python's
            raise ModelError(_load_error(self.path, e)) from e
        graph_inputs = self.session.get_inputs()
        self.input_names: list[str] = [i.name for i in graph_inputs]
        # Named (dynamic) axes such as "batch" become None.
        self.input_shapes: list[tuple[int | None, ...]] = [
            tuple(d if isinstance(d, int) else None for d in i.shape) for i in graph_inputs]
        self.input_dtypes: list[type] = [_ORT_TYPES.get(i.type, np.float32) for i in graph_inputs]
        self.input_name, self.input_shape = self.input_names[0], self.input_shapes[0]
        self.output_names: list[str] = [o.name for o in self.session.get_outputs()]

    @property
    def metadata(self) -> dict[str, str]:
        """The model's metadata_props (class names, mean/std, input size, ... as the exporter wrote them)."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def feed(self, *inputs) -> dict[str, np.ndarray]:
        """The session's input dict for `inputs` (positional arrays or one dict by name), cast to the graph's dtypes."""
        if len(inputs) == 1 and isinstance(inputs[0], dict):
            named = inputs[0]
        else:
            if len(inputs) != len(self.input_names):
                raise ModelError(f"ONNX model {self.path.name} takes {len(self.input_names)} input(s) "
                                 f"({', '.join(self.input_names)}), got {len(inputs)}")
            named = dict(zip(self.input_names, inputs))
        missing = [n for n in self.input_names if n not in named]
        if missing:
            raise ModelError(f"ONNX model {self.path.name} needs input(s) {', '.join(missing)}")
        return {name: np.ascontiguousarray(np.asarray(named[name]), dtype=dtype)
                for name, dtype in zip(self.input_names, self.input_dtypes)}

    def __call__(self, *inputs) -> list[np.ndarray]:
        feed = self.feed(*inputs)
        try:
            return self.session.run(None, feed)
        except Exception as e:
            given = "; ".join(f"input '{n}' of shape {tuple(a.shape)} (expects {_shape_text(s)})"
                              for (n, a), s in zip(feed.items(), self.input_shapes))
            raise ModelError(f"ONNX model {self.path.name} rejected {given}: {_first_line(e)}") from e


def _load_error(path: Path, e: Exception) -> str:
    text = str(e)
    for pattern in _UNSUPPORTED_OP:
        match = pattern.search(text)
        if match:
            op, version = match.groups()
            return (
                f"ONNX model {path} uses operator {op} (opset {version}), which ONNX Runtime {ort.__version__} "
                "cannot run: re-export it with standard ONNX operators or another opset"
            )
    if "protobuf" in text.lower():
        return f"{path} is not a readable ONNX model (truncated or not ONNX at all): re-export or re-download it"
    return f"ONNX Runtime cannot load {path}: {_first_line(e)}"


def _shape_text(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


def _first_line(e: BaseException) -> str:
    """ONNX Runtime's message without its '[ONNXRuntimeError] : 2 : FAIL : ' prefix."""
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", first_line(e))
