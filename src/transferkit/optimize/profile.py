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
