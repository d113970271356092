"""What a task supplies to the shared verbs (api.py). Everything else is written once."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..engine.module import TaskModule
from ..engine.checkpoint import LoadReport
from ..errors import ModelError


class Predictor:
    """An image batch -> the network's raw outputs, from a checkpoint (eager) or an .onnx file.

    Tasks post-process these outputs the same way whichever backend produced them, so evaluate and
    inference give the same files for `-m best.ckpt` and `-m model.onnx`.
    """

    def __init__(self, meta: dict, run: Callable[[torch.Tensor], list[torch.Tensor]], kind: str, source: Path):
        self.meta = meta
        self.run = run
        self.kind = kind  # "pytorch" | "onnx"
        self.source = source

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.run(images)


@dataclass
class ExportGraph:
    """What `export` writes to ONNX: the module (image batch -> outputs), its output names, metadata the
    task adds to the file, and the dynamic axes of outputs whose first axis is not the batch."""

    module: nn.Module
    output_names: tuple[str, ...]
    meta: dict = field(default_factory=dict)
    output_axes: dict[str, dict[int, str]] | None = None
    int8_op_types: tuple[str, ...] | None = None  # operators INT8 may quantise (None: all it supports)


class Task:
    """Base for a task. Subclasses set the class attributes and implement the methods."""

    name: str = ""
    spec_class: type = None
    monitor: str = "val/loss"
    monitor_mode: str = "min"
    output_names: tuple[str, ...] = ("output",)
    headline: str = ""  # the evaluate metric tables show first (top1, mAP ...)
    description: str = ""
    # Every training batch has one input shape (images resized to one size): cuDNN may then benchmark its
    # algorithms once and keep the fastest. False for variable-length inputs (audio, text), where it would re-tune often.
    fixed_input_shape: bool = True

    def default_spec_header(self) -> str:
        return (f"transferkit {self.name} spec. Every key is optional; values shown are the defaults.\n"
                f"Override any key on the command line: tkit {self.name} train -e spec.yaml -r runs/x train.epochs=3")

    # data and model ------------------------------------------------------------------------
    def build_data(self, spec, classes: list[str] | None = None):
        raise NotImplementedError

    def build_training_module(self, spec, data) -> tuple[TaskModule, LoadReport | None]:
        raise NotImplementedError

    def build_net(self, meta: dict) -> nn.Module:
        """The architecture a checkpoint's metadata describes, randomly initialised."""
        raise NotImplementedError

    def load_net(self, meta: dict, state: dict, path: Path) -> nn.Module:
        """The network a checkpoint describes, with its weights (strict: every tensor must fit)."""
        net = self.build_net(meta)
        net_state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")} or state
        try:
            net.load_state_dict(net_state)
        except RuntimeError as e:
            raise ModelError(f"{path}: weights do not fit the {meta.get('backbone')} architecture it names "
                             f"({str(e).splitlines()[0][:200]})") from None
        return net

    def input_hw(self, meta: dict) -> tuple[int, int]:
        """(height, width) of the network input a checkpoint's metadata fixes."""
        return meta["image_size"], meta["image_size"]

    def evaluate_without_model(self, spec, out_dir: Path) -> dict[str, Any] | None:
        """Score predictions already on disk (no -m), where the task supports it; None otherwise."""
        return None

    def load_pruned(self, model_cfg, meta: dict, classes: list[str],
                    arch_keys: tuple[str, ...] = ("backbone", "pruned_shapes")) -> nn.Module:
        """TAO's retrain: the network of `model.pruned` with its weights; `meta` takes its `arch_keys`."""
        from ..engine.checkpoint import read_checkpoint
        from ..errors import DataError
        from ..spec import require_path

        path = require_path("model.pruned", model_cfg.pruned, "file")
        pruned_meta, state = read_checkpoint(path, task=self.name)
        if [c.lower() for c in pruned_meta["classes"]] != [c.lower() for c in classes]:
            raise DataError(f"model.pruned: {path} was trained on classes {pruned_meta['classes']}, the data has "
                            f"{classes}; retrain a pruned model on the same classes")
        meta.update({k: pruned_meta[k] for k in arch_keys if k in pruned_meta})
        net = self.load_net(meta, state, path)
        net.backbone.freeze(list(model_cfg.freeze_blocks), model_cfg.freeze_bn)
        logging.getLogger("transferkit").info("retraining the pruned model %s", path)
        return net

    def prune_ignored_layers(self, net: nn.Module) -> list[nn.Module]:
        """Layers whose outputs are the network's outputs (their channel counts are fixed)."""
        return []

    def spec_for_model(self, spec, meta: dict):
        """The spec adjusted to what the model file fixes (input size, classes)."""
        return spec

    def export_graph(self, net: nn.Module, meta: dict, spec) -> ExportGraph:
        """The graph `export` writes: by default the network's raw outputs."""
        return ExportGraph(net, self.output_names)

    def check_export(self, spec, net: nn.Module, graph: ExportGraph, onnx_path: Path, probe: torch.Tensor) -> dict:
        """Compare the ONNX file with PyTorch on `probe` images; raise ModelError when they differ."""
        from ..optimize import verify_export

        return verify_export(graph.module, onnx_path, probe, atol=spec.export.parity_tolerance, rtol=0)

    # verbs that differ per task ------------------------------------------------------------
    def evaluate(self, spec, predictor: Predictor, data, out_dir: Path) -> dict[str, Any]:
        raise NotImplementedError

    def inference(self, spec, predictor: Predictor, out_dir: Path) -> dict[str, Any]:
        raise NotImplementedError

    extra_verbs: dict[str, Callable] = {}
