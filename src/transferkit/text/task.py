"""TextTask: what every text task adds to the core Task: the encoder a spec names (or a checkpoint carries), the
tokenizer inside the model's metadata, text inputs (int64 input_ids / attention_mask of dynamic length), pruning
of attention heads and FFN neurons (text.prune), and the tokenizer files beside an export.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..data.items import skipped_report
from ..engine.checkpoint import LoadReport, class_row_map, read_checkpoint, strip_prefix, transfer_weights
from ..engine.meta import InputSpec, ModelMeta, TextParams
from ..errors import ModelError, SpecError
from ..io import atomic_write_json, atomic_write_text
from ..spec import require_path
from ..tasks.base import ExportGraph, Predictor, Task
from .data import LineReport
from .encoder import TextNet, architecture_config, build_from_config, find_backbone, load_pretrained
from .tokenizer import TOKENIZER_FILE, TextTokenizer

log = logging.getLogger("transferkit")


@dataclass
class LabelLoadReport(LoadReport):
    """A LoadReport that also names the labels whose head rows were kept, started fresh, or left behind."""

    labels: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {**super().as_dict(), "labels": self.labels}


@dataclass(frozen=True)
class TextSource:
    """Where a training run's encoder comes from: its name, architecture config and tokenizer, and, for a run that
    continues from a checkpoint, that checkpoint's metadata."""

    name: str
    hf_config: Mapping[str, Any]
    tokenizer_json: str
    max_positions: int | None
    checkpoint: Path | None = None
    checkpoint_meta: ModelMeta | None = None


def text_inputs(tokenizer: str, max_length: int, lowercase: bool, vocab_size: int) -> tuple[InputSpec, InputSpec]:
    """The two inputs of every text model: token ids and the attention mask, both int64 [batch, length]."""
    params = TextParams(tokenizer=tokenizer, max_length=int(max_length), lowercase=bool(lowercase))
    return (InputSpec(name="input_ids", dtype="int64", shape=("batch", "length"), text=params,
                      value_range=(0, int(vocab_size))),
            InputSpec(name="attention_mask", dtype="int64", shape=("batch", "length"), value_range=(1, 2)))


def text_params(meta: ModelMeta) -> TextParams:
    for spec in meta.inputs:
        if spec.text is not None:
            return spec.text
    raise ModelError(f"this {meta.task} model declares no text input; retrain or re-export it")




class TextTask(Task):
    """Base of the text tasks. Subclasses set `head` ("sequence" or "token"), `data_class` and `file_suffix`, and
    implement `convert` (dataset_convert) besides the Task hooks."""

    item_kind = "sentences"
    fixed_input_shape = False  # every batch is padded to its own longest sentence
    head: str = "sequence"
    output_names = ("logits",)
    data_class: type = None  # the task's TextData: data_class(spec, tokenizer, meta=None)
    file_suffix = ".txt"  # the usual extension of the task's data files, for examples in messages

    @property
    def extra_verbs(self):
        return {"dataset_convert": self.dataset_convert}

    # -- data ---------------------------------------------------------------------------------------------
    def build_data(self, spec, meta: ModelMeta | None = None):
        """The task's data on the model's tokenizer (evaluate, export) or on the one training will use."""
        if meta is not None:
            if spec.export.int8 and not (spec.data.val_file or spec.data.train_file):
                raise SpecError(self.no_eval_data())  # before the INT8 model is written, not after
            return self.data_class(spec, self.tokenizer(meta), meta)
        source = self.text_source(spec.model)
        self.check_max_length(spec.model, source)
        return self.data_class(spec, TextTokenizer(source.tokenizer_json, spec.model.max_length, spec.model.lowercase))

    def no_eval_data(self) -> str:
        return ("data.val_file is not set: evaluate (and export with export.int8=true, which scores each runtime) "
                f"needs labelled sentences, e.g. data.val_file=val{self.file_suffix} (or data.train_file, whose "
                "held-out val_split it scores)")

    def require_eval_data(self, spec) -> None:
        if not (spec.data.val_file or spec.data.train_file):
            raise SpecError(self.no_eval_data())

    def inference_summary(self, predictor: Predictor, count: int, passed_over: LineReport, predictions: Path,
                          **extra: Any) -> dict[str, Any]:
        """inference.json of a text task: `count` inputs predicted, the lines passed over (also logged), `extra`."""
        bad, blank = passed_over.bad, passed_over.blank
        if bad:
            log.warning("inference.file: skipped %d line(s), e.g. %s: %s", len(bad), *next(iter(bad.items())))
        if blank:
            log.info("inference.file: %d blank line(s) ignored", blank)
        return {self.item_kind: count, f"skipped_{self.item_kind}": skipped_report(bad), "blank_lines": blank,
                **extra, "predictions": str(predictions), "model": predictor.info}

    # -- dataset_convert ----------------------------------------------------------------------------------
    def dataset_convert(self, spec, results: Path | None, model=None) -> dict[str, Any]:
        """data.train_file / data.val_file -> files in dataset_convert.output_dir (else RESULTS/converted), by the
        task's `convert`; its report is also written to RESULTS/dataset_convert.json."""
        out = Path(spec.dataset_convert.output_dir) if spec.dataset_convert.output_dir else \
            (results / "converted" if results else None)
        if out is None:
            raise SpecError("dataset_convert needs dataset_convert.output_dir=DIR (or -r DIR)")
        files = {split: getattr(spec.data, f"{split}_file") for split in ("train", "val")
                 if getattr(spec.data, f"{split}_file")}
        if not files:
            raise SpecError("dataset_convert needs data.train_file and/or data.val_file to convert")
        report = {"output_dir": str(out), **self.convert(spec, out, files)}
        if results is not None:
            atomic_write_json(results / "dataset_convert.json", report)
        return report

    def convert(self, spec, out: Path, files: dict[str, str]) -> dict[str, Any]:
        """Convert `files` ({split: data.<split>_file}) into the folder `out`; the report (output format first)."""
        raise NotImplementedError

    # -- the encoder and its tokenizer --------------------------------------------------------------------
    def text_source(self, model_cfg) -> TextSource:
        """The encoder a training spec names: model.pruned, a model.pretrained checkpoint, or model.backbone."""
        ckpt = model_cfg.pruned or (model_cfg.pretrained if isinstance(model_cfg.pretrained, str) else None)
        if ckpt is not None:
            key = "model.pruned" if model_cfg.pruned else "model.pretrained"
            if not model_cfg.pruned and not str(ckpt).endswith(".ckpt"):
                raise SpecError(f"model.pretrained={ckpt!r}: give true, false or a {self.name} .ckpt to continue from; "
                                "another Hugging Face model goes in model.backbone")
            path = require_path(key, ckpt, "file")
            meta, _ = read_checkpoint(path, task=self.name)
            arch = meta.arch
            if "hf_config" not in arch or "tokenizer_json" not in arch:
                raise ModelError(f"{key}: {path} carries no encoder config or tokenizer; retrain it with this transferkit")
            return TextSource(meta.backbone or str(path), arch["hf_config"], arch["tokenizer_json"],
                              arch["hf_config"].get("max_position_embeddings"), path, meta)
        backbone = find_backbone(model_cfg.backbone)
        return TextSource(backbone.name, backbone.config, backbone.tokenizer_json, backbone.max_positions)

    def check_max_length(self, model_cfg, source: TextSource) -> None:
        if source.max_positions is not None and model_cfg.max_length > source.max_positions:
            raise SpecError(f"model.max_length={model_cfg.max_length} is more than the {source.max_positions} "
                            f"positions {source.name} has; set model.max_length={source.max_positions} or less")

    def tokenizer(self, meta: ModelMeta) -> TextTokenizer:
        """The tokenizer a model's metadata carries, truncating as the model was trained."""
        text = text_params(meta)
        if "tokenizer_json" not in meta.arch:
            raise ModelError(f"this {meta.task} model carries no tokenizer; retrain or re-export it")
        return TextTokenizer(meta.arch["tokenizer_json"], text.max_length, text.lowercase)

    def text_meta(self, model_cfg, source: TextSource, classes: Sequence[str], hf_config: Mapping[str, Any],
                  **arch: Any) -> ModelMeta:
        """The ModelMeta of a text model being trained (arch: hf_config, tokenizer_json, head, and `arch`)."""
        config = architecture_config(hf_config)
        vocab = int(config.get("vocab_size") or 0) or TextTokenizer(source.tokenizer_json, 8).vocab_size
        return ModelMeta(task=self.name, classes=tuple(classes), backbone=source.name,
                         inputs=text_inputs(source.name, model_cfg.max_length, model_cfg.lowercase, vocab),
                         arch={"hf_config": config, "tokenizer_json": source.tokenizer_json, "head": self.head, **arch})

    def initial_net(self, model_cfg, source: TextSource, classes: Sequence[str], **arch: Any
                    ) -> tuple[TextNet, ModelMeta, LoadReport | None]:
        """The network training starts from (in training mode), its ModelMeta and what loaded: a pruned checkpoint
        (model.pruned), a checkpoint of this task (label rows matched by name), pretrained weights, or random
        weights. Trained word embeddings stay fixed when model.freeze_embeddings."""
        net, meta, report = self._initial_net(model_cfg, source, classes, **arch)
        if model_cfg.freeze_embeddings and (model_cfg.pretrained or model_cfg.pruned):
            net.backbone.get_input_embeddings().weight.requires_grad_(False)
        return net.train(), meta, report

    def training_net(self, spec, data, **arch: Any) -> tuple[TextNet, ModelMeta, LoadReport | None]:
        """initial_net for the labels of `data`, whose data.train_file must be set (build_training_module)."""
        if not data.has_train:
            raise SpecError(f"data.train_file is not set; training needs it, e.g. data.train_file=train{self.file_suffix}")
        return self.initial_net(spec.model, self.text_source(spec.model), data.classes, **arch)

    def _initial_net(self, model_cfg, source: TextSource, classes: Sequence[str], **arch: Any
                     ) -> tuple[TextNet, ModelMeta, LoadReport | None]:
        self.check_max_length(model_cfg, source)
        overrides = dict(model_cfg.config_overrides)
        n = len(classes)
        if model_cfg.pruned:
            meta = self.text_meta(model_cfg, source, classes, source.hf_config, **arch)
            net, meta = self.load_pruned(model_cfg, meta)
            return net, meta, None
        if source.checkpoint is not None:
            old = source.checkpoint_meta
            net = TextNet(build_from_config(source.hf_config, self.head, n, overrides))
            meta = self.text_meta(model_cfg, source, classes, net.model.config.to_dict(), **arch)
            if old.pruned_shapes:
                self.apply_pruned_shapes(net, old.pruned_shapes)
                meta = meta.with_updates(pruned_shapes=old.pruned_shapes, history=old.history)
            _, state = read_checkpoint(source.checkpoint, task=self.name)
            layer, _ = net.output_layer()
            rows = class_row_map(list(old.classes), list(classes))
            loaded = transfer_weights(net, strip_prefix(state, "net."), str(source.checkpoint),
                                      {f"{layer}.weight": rows, f"{layer}.bias": rows})
            old_names = {c.lower() for c in old.classes}
            new_names = {c.lower() for c in classes}
            labels = {"kept": [c for c in classes if c.lower() in old_names],
                      "new": [c for c in classes if c.lower() not in old_names],
                      "dropped": [c for c in old.classes if c.lower() not in new_names]}
            log.info("continuing from %s: labels kept %s, new %s, dropped %s", source.checkpoint,
                     *(labels[k] or "none" for k in ("kept", "new", "dropped")))
            return net, meta, LabelLoadReport(**vars(loaded), labels=labels)
        if model_cfg.pretrained:
            backbone = find_backbone(model_cfg.backbone)
            model, report = load_pretrained(backbone, self.head, n, overrides)
        else:
            model, report = build_from_config(source.hf_config, self.head, n, overrides), None
        net = TextNet(model)
        return net, self.text_meta(model_cfg, source, classes, model.config.to_dict(), **arch), report

    def build_net(self, meta: ModelMeta) -> nn.Module:
        arch = meta.arch
        if "hf_config" not in arch:
            raise ModelError(f"this {meta.task} model carries no encoder config; retrain it with this transferkit")
        net = TextNet(build_from_config(arch["hf_config"], arch.get("head", self.head), len(meta.classes)))
        if meta.pruned_shapes:
            self.apply_pruned_shapes(net, meta.pruned_shapes)
        return net

    def example_inputs(self, meta: ModelMeta, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Token ids of a 32-token input (or max_length, when shorter) and a full mask: latency, prune tracing."""
        length = min(32, text_params(meta).max_length)
        return meta.example_inputs(batch, sizes={"length": length})

    def spec_for_model(self, spec, meta: ModelMeta):
        """model.max_length and model.lowercase as the model was trained (its tokenizer truncates there)."""
        text = text_params(meta)
        fixed = {"max_length": text.max_length, "lowercase": text.lowercase}
        changed = {k: v for k, v in fixed.items() if getattr(spec.model, k) != v}
        if not changed:
            return spec
        log.info("using the model's %s", ", ".join(f"{k}={v}" for k, v in changed.items()))
        return spec.model_copy(update={"model": spec.model.model_copy(update=changed)})

    # -- pruning (text.prune: attention heads and FFN neurons) --------------------------------------------
    def _prune_module(self):
        from . import prune  # imported when used: torch-pruning is not needed to run a model

        return prune

    def prune_net(self, net: nn.Module, example: tuple[torch.Tensor, ...], spec):
        return self._prune_module().prune_transformer(net, example, spec.prune)

    def pruned_shapes(self, net: nn.Module) -> dict:
        return self._prune_module().transformer_shapes(net)

    def apply_pruned_shapes(self, net: TextNet, shapes: Mapping[str, Any]) -> TextNet:
        return self._prune_module().apply_transformer_shapes(net, dict(shapes))

    # -- export -------------------------------------------------------------------------------------------
    def export_graph(self, net: nn.Module, meta: ModelMeta, spec) -> ExportGraph:
        """A copy of the network whose linear layers keep their weights transposed: exported without constant
        folding, nn.Linear becomes MatMul(x, Transpose(W)), and dynamic INT8 quantises only MatMuls that read a
        weight initializer directly (it left all 42 of MiniLM's encoder MatMuls in float). The token head's
        logits are [batch, length, tags]: their length axis is dynamic too."""
        from ..optimize import with_transposed_linears

        graph = with_transposed_linears(net)
        axes = {name: {0: "batch", 1: "length"} for name in self.output_names} if self.head == "token" else None
        # The .onnx needs no rebuilding, so its metadata drops pruned_shapes; the layer sizes stay for `model info`.
        built_in = {"pruned_shapes": dict(meta.pruned_shapes)} if meta is not None and meta.pruned_shapes else {}
        return ExportGraph(graph, self.output_names, meta=built_in, output_axes=axes)

    def check_export(self, spec, net: nn.Module, graph: ExportGraph, onnx_path: Path,
                     probe: tuple[torch.Tensor, ...]) -> dict:
        """Parity of the ONNX file with the trained network itself (not the export copy)."""
        from ..optimize import verify_export

        return verify_export(net, onnx_path, probe, atol=spec.export.parity_tolerance, rtol=0)

    def describe_model(self, meta: ModelMeta) -> dict[str, str]:
        """The Task's lines plus the head and the encoder's size: per layer (attention heads / FFN width) when pruned."""
        info = super().describe_model(meta)
        head = meta.arch.get("head", self.head)
        info["head"] = f"{head} ({'multi-label, sigmoid' if meta.arch.get('multi_label') else 'softmax'})"
        config = meta.arch.get("hf_config") or {}
        layers, heads = config.get("num_hidden_layers"), config.get("num_attention_heads")
        info["encoder"] = (f"{config.get('model_type', '?')}, {layers} layers, hidden {config.get('hidden_size')}, "
                           f"{heads} attention heads and FFN {config.get('intermediate_size')} per layer")
        shapes = meta.pruned_shapes or meta.export.get("pruned_shapes")
        if isinstance(shapes, Mapping) and isinstance(shapes.get("layers"), Mapping):
            per_layer = [f"{name.rsplit('.', 1)[-1]}: {s.get('heads')}/{s.get('ffn')}"
                         for name, s in shapes["layers"].items()]
            info["encoder"] += " before pruning"
            info["pruned layers (heads/FFN)"] = ", ".join(per_layer)
        return info

    def onnx_metadata(self, meta: ModelMeta) -> dict[str, Any]:
        text = text_params(meta)
        return {"tokenizer": text.tokenizer, "max_length": text.max_length, "lowercase": text.lowercase}

    def export_files(self, meta: ModelMeta, out_dir: Path) -> dict[str, str]:
        """tokenizer.json beside model.onnx, for tools that do not read its metadata (which holds it too)."""
        path = atomic_write_text(Path(out_dir) / TOKENIZER_FILE, meta.arch["tokenizer_json"])
        return {"tokenizer": str(path)}
