"""Checkpoint files and weight transfer.

Every transferkit checkpoint (Lightning's `last.ckpt`/`best.ckpt`, and the prune verb's
`pruned.ckpt`) is a plain dict with `state_dict` and a `transferkit` metadata block: a
`ModelMeta` as plain data (task, classes, backbone, input specs, architecture facts, pruned layer
shapes). It loads with `torch.load(weights_only=True)`: nothing in it is a pickled Python object.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from ..errors import ModelError
from ..io import atomic_torch_save, safe_torch_load
from .meta import ModelMeta

log = logging.getLogger("transferkit")

META_KEY = "transferkit"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint writer that writes to a temp file and renames it into place."""

    def save_checkpoint(self, checkpoint: dict, path: Any, storage_options: Any = None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        """Resuming reads last.ckpt weights-only, with transferkit's one-line refusal of anything else."""
        return safe_torch_load(path)


def read_checkpoint(path: str | Path, task: str | None = None) -> tuple[ModelMeta, dict[str, torch.Tensor]]:
    """-> (metadata, state_dict) of a transferkit checkpoint (any metadata version); refuses other files clearly."""
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or META_KEY not in ckpt or "state_dict" not in ckpt:
        raise ModelError(
            f"{path} is not a transferkit checkpoint (no '{META_KEY}' metadata); pass a best.ckpt, "
            "last.ckpt or pruned.ckpt written by tkit, or an exported .onnx"
        )
    meta = ModelMeta.from_dict(ckpt[META_KEY], str(path))
    if task is not None and meta.task != task:
        raise ModelError(
            f"{path} is a {meta.task} checkpoint, not {task}: use `tkit {meta.task} ...` or a {task} checkpoint"
        )
    return meta, ckpt["state_dict"]


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


@dataclass
class LoadReport:
    """What happened to every tensor when weights were transferred into a new model."""

    source: str
    loaded: list[str] = field(default_factory=list)
    reinitialised: dict[str, str] = field(default_factory=dict)  # name -> why
    partially_loaded: dict[str, str] = field(default_factory=dict)  # name -> what was kept
    unused: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "counts": {
                "loaded": len(self.loaded),
                "partially_loaded": len(self.partially_loaded),
                "reinitialised": len(self.reinitialised),
                "unused": len(self.unused),
            },
            "loaded": self.loaded,
            "partially_loaded": self.partially_loaded,
            "reinitialised": self.reinitialised,
            "unused": self.unused,
        }

    @classmethod
    def backbone_only(cls, net: nn.Module, new_part: str) -> "LoadReport | None":
        """What happened when `net.backbone` loaded its own pretrained weights (a zoo backbone's `pretrained_info`)
        and every other tensor of `net` is new (`new_part` says what, e.g. "new detection head"); None when the
        backbone loaded nothing."""
        info = getattr(net.backbone, "pretrained_info", None)
        if info is None:
            return None
        report = cls(source=str(info.source))
        report.loaded = [f"backbone.{k}" for k in net.backbone.state_dict()]
        report.reinitialised = {k: new_part for k in net.state_dict()
                                if not k.startswith("backbone.") and not k.endswith("num_batches_tracked")}
        return report

    def summary(self) -> str:
        c = self.as_dict()["counts"]
        text = (f"weights from {self.source}: {c['loaded']} tensors loaded, {c['partially_loaded']} partially, "
                f"{c['reinitialised']} re-initialised, {c['unused']} unused")
        if self.reinitialised:
            names = list(self.reinitialised)[:4]
            text += f" (re-initialised: {', '.join(names)}{' ...' if len(self.reinitialised) > 4 else ''})"
        return text


def transfer_weights(
    model: nn.Module,
    source: dict[str, torch.Tensor],
    source_name: str,
    row_maps: dict[str, list[tuple[int, int]]] | None = None,
) -> LoadReport:
    """Load `source` into `model` by name. Tensors whose shape differs keep their fresh init.

    `row_maps` names tensors (e.g. a classifier's weight and bias) whose rows are copied one by
    one, [(source_row, target_row), ...], so classes shared by an old and a new class list keep
    what they learned even when the lists differ.
    """
    report = LoadReport(source=source_name)
    row_maps = row_maps or {}
    target = model.state_dict()
    new_state = {}
    for name, tensor in target.items():
        if name not in source:
            if not name.endswith("num_batches_tracked"):
                report.reinitialised[name] = "not in the source weights"
            continue
        src = source[name]
        if name in row_maps and src.dim() >= 1 and src.shape[1:] == tensor.shape[1:]:
            merged = tensor.clone()
            pairs = row_maps[name]
            for s, t in pairs:
                merged[t] = src[s].to(merged.dtype)
            new_state[name] = merged
            if pairs:
                report.partially_loaded[name] = f"{len(pairs)} of {tensor.shape[0]} rows kept (matched by class name)"
            else:
                report.reinitialised[name] = "no class in common with the source"
        elif src.shape == tensor.shape:
            new_state[name] = src.to(tensor.dtype)
            report.loaded.append(name)
        else:
            report.reinitialised[name] = f"shape {list(src.shape)} in the source, {list(tensor.shape)} here"
    report.unused = [k for k in source if k not in target]
    model.load_state_dict(new_state, strict=False)
    return report


def class_row_map(old: list[str], new: list[str]) -> list[tuple[int, int]]:
    """Pairs (old_index, new_index) for classes present in both lists (case-insensitive)."""
    index = {name.lower(): i for i, name in enumerate(old)}
    return [(index[name.lower()], j) for j, name in enumerate(new) if name.lower() in index]
