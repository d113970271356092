"""Run an exported `.onnx` model with ONNX Runtime: the inference path for `-m model.onnx`."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from ..errors import ModelError, first_line

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


class OnnxModel:
    """An ONNX file ready to run on float32 image batches; `model(batch)` returns every output."""

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] | None = None, threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"ONNX model {self.path} does not exist: pass an existing .onnx file with -m")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # errors only: ORT's warnings about initialisers are noise here
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=list(providers or default_providers()))
        except Exception as e:  # ORT raises its own exception types, none shared with Python's
            raise ModelError(_load_error(self.path, e)) from e
        first = self.session.get_inputs()[0]
        self.input_name: str = first.name
        # Named (dynamic) axes such as "batch" become None.
        self.input_shape: tuple[int | None, ...] = tuple(d if isinstance(d, int) else None for d in first.shape)
        self.output_names: list[str] = [o.name for o in self.session.get_outputs()]

    @property
    def metadata(self) -> dict[str, str]:
        """The model's metadata_props (class names, mean/std, input size, ... as the exporter wrote them)."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        try:
            return self.session.run(None, {self.input_name: batch})
        except Exception as e:
            raise ModelError(
                f"ONNX model {self.path.name} rejected an input of shape {tuple(batch.shape)} "
                f"(expects {_shape_text(self.input_shape)}): {_first_line(e)}"
            ) from e


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
