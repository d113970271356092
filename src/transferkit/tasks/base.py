"""What a task supplies to the shared verbs (api.py). Everything else is written once."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..engine.module import TaskModule
from ..engine.checkpoint import LoadReport
from ..engine.meta import InputSpec, ModelMeta
from ..errors import ModelError


class Predictor:
    """The model's inputs -> the network's raw outputs, from a checkpoint (eager) or an .onnx file.

    `predictor(*inputs)` takes the tensors its `meta.inputs` declare, in order (one image batch for
    a vision model, token ids for a text model ...). Tasks post-process the outputs the same way
    whichever backend produced them, so evaluate and inference give the same files for
    `-m best.ckpt` and `-m model.onnx`.
    """

    def __init__(self, meta: ModelMeta, run: Callable[..., list[torch.Tensor]], kind: str, source: Path,
                 net: nn.Module | None = None):
        self.meta = meta
        self.run = run
        self.kind = kind  # "pytorch" | "onnx"
        self.source = source
        self.net = net  # the eager network (None for ONNX)
        self.calls: list[tuple[float, int]] = []  # (seconds, batch size) of every call: inference's summary

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        start = time.perf_counter()
        outputs = self.run(*inputs)
        batch = int(inputs[0].shape[0]) if inputs and getattr(inputs[0], "ndim", 0) else 1
        self.calls.append((time.perf_counter() - start, batch))
        return outputs

    def timing(self, wall_s: float, items: int) -> dict[str, float | int]:
        """Throughput of a run that made `items` predictions in `wall_s` seconds, and the model's own share:
        per-call latency percentiles (p50, p95) over the calls made so far."""
        seconds = sorted(s for s, _ in self.calls)
        model_s = sum(seconds)

        def percentile(q: float) -> float:
            return round(1000 * seconds[min(len(seconds) - 1, int(q * len(seconds)))], 3) if seconds else 0.0

        return {"items": items, "wall_s": round(wall_s, 3),
                "items_per_s": round(items / wall_s, 2) if wall_s > 0 else 0.0,
                "model_calls": len(seconds), "batch_size_max": max((b for _, b in self.calls), default=0),
                "model_s": round(model_s, 3), "model_ms_p50": percentile(0.5), "model_ms_p95": percentile(0.95),
                "model_share": round(model_s / wall_s, 3) if wall_s > 0 else 0.0}

    @property
    def info(self) -> dict[str, str]:
        """The `model` entry of metrics.json and inference.json: the file scored and the runtime that ran it."""
        return {"file": str(self.source), "runtime": self.kind}


@dataclass
class ExportGraph:
    """What `export` writes to ONNX: the module (the model's inputs -> outputs), its output names, what the
    graph has built in (ModelMeta.export), and the dynamic axes of outputs whose first axis is not the batch."""

    module: nn.Module
    output_names: tuple[str, ...]
    meta: dict = field(default_factory=dict)
    output_axes: dict[str, dict[int, str]] | None = None
    int8_op_types: tuple[str, ...] | None = None  # operators INT8 may quantise (None: all it supports)
    int8_exclude: tuple[str, ...] = ()  # operator types / conv kinds / node names INT8 keeps in float (quantize_int8)


def describe_input(spec: InputSpec) -> str:
    """One network input in words: dtype, shape and how raw data becomes it."""
    text = f"{spec.dtype} [{', '.join(str(d) for d in spec.shape)}]"
    if spec.image is not None:
        i = spec.image
        text += f", image {i.height}x{i.width}, mean {list(i.mean)}, std {list(i.std)}"
    if spec.text is not None:
        t = spec.text
        text += f", tokenizer {t.tokenizer}, max_length {t.max_length}, lowercase {str(t.lowercase).lower()}"
    if spec.audio is not None:
        text += f", audio {spec.audio.sample_rate} Hz, {spec.audio.features}"
    return text


class Task:
    """Base for a task. Subclasses set the class attributes and implement the methods."""

    name: str = ""
    spec_class: type = None
    monitor: str = "val/loss"
    monitor_mode: str = "min"
    output_names: tuple[str, ...] = ("output",)
    headline: str = ""  # the evaluate metric tables show first (top1, mAP ...)
    item_kind: str = "items"  # what one data item is, in the run's summary (images, utterances, sentences)
    description: str = ""
    # Every training batch has one input shape (images resized to one size): cuDNN may then benchmark its
    # algorithms once and keep the fastest. False for variable-length inputs (audio, text), where it would re-tune often.
    fixed_input_shape: bool = True
    # The default `automl.search_space` ({dotted key: {float: [lo, hi], log: true} | {int: ..} | {choice: [..]}});
    # None: default_search_space() derives one from the spec's own training keys.
    automl_search_space: dict[str, dict] | None = None

    def default_spec_header(self) -> str:
        return (f"transferkit {self.name} spec. Every key is optional; values shown are the defaults.\n"
                f"Override any key on the command line: tkit {self.name} train -e spec.yaml -r runs/x train.epochs=3")

    def default_search_space(self, spec=None) -> dict[str, dict]:
        """What `tkit <task> automl` searches when the spec names no keys: `automl_search_space`, else the learning
        rate around the spec's own (`spec`, default: the task's default spec), weight decay, the backbone's
        learning-rate scale, the spec's batch size and half of it, and dropout / colour jitter where the spec has
        them (TAO's AutoML keys)."""
        if self.automl_search_space is not None:
            return {k: dict(v) for k, v in self.automl_search_space.items()}
        spec = self.spec_class() if spec is None else spec
        train = getattr(spec, "train", None)
        space: dict[str, dict] = {}
        if train is None:
            return space
        lr = getattr(train, "learning_rate", None)
        if lr:
            space["train.learning_rate"] = {"float": [float(f"{lr / 10:.3g}"), float(f"{lr * 3:.3g}")], "log": True}
        if hasattr(train, "weight_decay"):
            space["train.weight_decay"] = {"float": [1e-6, 1e-2], "log": True}
        if getattr(train, "backbone_lr_scale", None) is not None:
            space["train.backbone_lr_scale"] = {"float": [0.03, 1.0], "log": True}
        batch = getattr(train, "batch_size", None)
        if batch and batch >= 8:
            space["train.batch_size"] = {"choice": [batch // 2, batch]}
        model, data = getattr(spec, "model", None), getattr(spec, "data", None)
        if hasattr(model, "dropout"):
            space["model.dropout"] = {"float": [0.0, 0.5]}
        if hasattr(getattr(data, "augmentation", None), "color_jitter"):
            space["data.augmentation.color_jitter"] = {"float": [0.0, 0.4]}
        return space

    # data and model ------------------------------------------------------------------------
    def build_data(self, spec, meta: ModelMeta | None = None):
        """The task's DataModule; with `meta` (evaluate, export) the data follows the model's classes and inputs."""
        raise NotImplementedError

    def build_training_module(self, spec, data) -> tuple[TaskModule, LoadReport | None]:
        raise NotImplementedError

    def build_net(self, meta: ModelMeta) -> nn.Module:
        """The architecture a checkpoint's metadata describes, randomly initialised (pruned layer sizes applied)."""
        raise NotImplementedError

    def load_net(self, meta: ModelMeta, state: dict, path: Path) -> nn.Module:
        """The network a checkpoint describes, with its weights (strict: every tensor must fit)."""
        net = self.build_net(meta)
        net_state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")} or state
        try:
            net.load_state_dict(net_state)
        except RuntimeError as e:
            raise ModelError(f"{path}: weights do not fit the {meta.backbone} architecture it names "
                             f"({str(e).splitlines()[0][:200]})") from None
        return net

    def named_model(self, name: str, device: str = "cpu") -> "Predictor | None":
        """A Predictor for `-m NAME` when NAME is not a file but a model the task can run as it is (speech_to_text:
        a zoo model, zero-shot); None: the task has no such models and NAME is read as a path."""
        return None

    def model_names(self) -> list[str]:
        """The names named_model runs (for "did you mean" when `-m` names neither a file nor one of them)."""
        return []

    def example_inputs(self, meta: ModelMeta, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Inputs of the right names, dtypes and shapes for latency, prune tracing and export probes."""
        return meta.example_inputs(batch)

    def eager_runner(self, net: nn.Module, device: str) -> Callable[..., Any]:
        """How evaluate/inference call the eager network on a batch of inputs (vision picks the memory layout)."""
        return lambda *inputs: net(*(x.to(device) for x in inputs))

    def describe_model(self, meta: ModelMeta) -> dict[str, str]:
        """What `tkit model info FILE` prints about a model file of this task (label: text)."""
        shown = ", ".join(meta.classes[:8]) + (", ..." if len(meta.classes) > 8 else "")
        info = {"task": meta.task, "classes": f"{len(meta.classes)} ({shown})", "backbone": str(meta.backbone)}
        info.update({f"input {spec.name}": describe_input(spec) for spec in meta.inputs})
        if meta.history.get("pruned_from"):
            info["pruned from"] = str(meta.history["pruned_from"])
        return info

    def onnx_metadata(self, meta: ModelMeta) -> dict[str, Any]:
        """Human-readable keys an export adds beside the ModelMeta block (vision: mean, std, input_size)."""
        return {}

    def evaluate_without_model(self, spec, out_dir: Path) -> dict[str, Any] | None:
        """Score predictions already on disk (no -m), where the task supports it; None otherwise."""
        return None

    def load_pruned(self, model_cfg, meta: ModelMeta) -> tuple[nn.Module, ModelMeta]:
        """TAO's retrain: the network of `model.pruned` with its weights, and `meta` with its architecture."""
        from ..engine.checkpoint import read_checkpoint
        from ..errors import DataError
        from ..spec import require_path

        path = require_path("model.pruned", model_cfg.pruned, "file")
        pruned_meta, state = read_checkpoint(path, task=self.name)
        if [c.lower() for c in pruned_meta.classes] != [c.lower() for c in meta.classes]:
            raise DataError(f"model.pruned: {path} was trained on classes {list(pruned_meta.classes)}, the data has "
                            f"{list(meta.classes)}; retrain a pruned model on the same classes")
        meta = meta.with_updates(backbone=pruned_meta.backbone, arch=pruned_meta.arch,
                                 pruned_shapes=pruned_meta.pruned_shapes, history=pruned_meta.history)
        net = self.load_net(meta, state, path)
        backbone = getattr(net, "backbone", None)
        if hasattr(backbone, "freeze"):
            backbone.freeze(list(model_cfg.freeze_blocks), model_cfg.freeze_bn)
        logging.getLogger("transferkit").info("retraining the pruned model %s", path)
        return net, meta

    def prune_net(self, net: nn.Module, example: tuple[torch.Tensor, ...], spec):
        """Prune `net` in place as `spec.prune` says and return the optimize.PruneResult. Default: channel groups
        by norm (torch-pruning); the sizes `pruned_shapes` records end up in ModelMeta, which build_net applies."""
        from ..optimize import PruneConfig, prune_model

        p = spec.prune
        cfg = PruneConfig(threshold=None if p.ratio is not None else p.threshold, ratio=p.ratio, norm=p.norm,
                          granularity=p.granularity, min_num_filters=p.min_num_filters,
                          equalization=p.equalization, excluded_layers=list(p.excluded_layers))
        return prune_model(net, example, cfg, ignored_layers=self.prune_ignored_layers(net))

    def pruned_shapes(self, net: nn.Module) -> dict:
        """What ModelMeta.pruned_shapes records of a pruned network, for build_net to rebuild it (layer sizes)."""
        from ..optimize import layer_shapes

        return layer_shapes(net)

    def prune_ignored_layers(self, net: nn.Module) -> list[nn.Module]:
        """Layers whose outputs are the network's outputs (their channel counts are fixed)."""
        return []

    def spec_for_model(self, spec, meta: ModelMeta):
        """The spec adjusted to what the model file fixes (input size, classes)."""
        return spec

    def export_files(self, meta: ModelMeta, out_dir: Path) -> dict[str, str]:
        """Files `export` writes beside model.onnx for tools that do not read its metadata (text: tokenizer.json),
        {what: path}; they land in export_report.json. Default: none."""
        return {}

    def export_graph(self, net: nn.Module, meta: ModelMeta, spec) -> ExportGraph:
        """The graph `export` writes: by default the network's raw outputs."""
        return ExportGraph(net, self.output_names)

    def check_export(self, spec, net: nn.Module, graph: ExportGraph, onnx_path: Path,
                     probe: tuple[torch.Tensor, ...]) -> dict:
        """Compare the ONNX file with PyTorch on the `probe` inputs; raise ModelError when they differ."""
        from ..optimize import verify_export

        return verify_export(graph.module, onnx_path, probe, atol=spec.export.parity_tolerance, rtol=0)

    # verbs that differ per task ------------------------------------------------------------
    def evaluate(self, spec, predictor: Predictor, data, out_dir: Path) -> dict[str, Any]:
        raise NotImplementedError

    def inference(self, spec, predictor: Predictor, out_dir: Path) -> dict[str, Any]:
        raise NotImplementedError

    extra_verbs: dict[str, Callable] = {}
