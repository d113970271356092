"""Structured channel pruning with TAO's knobs, on torch-pruning's dependency graph.

torch-pruning's DependencyGraph finds which layers must lose the same channels together (a conv,
its BatchNorm, the next conv's input, every conv feeding the same residual add, a depthwise conv
and the conv before it). We score each such group the way TAO does and remove whole channels:

- each coupled conv/linear scores its output channels by the L2 norm (or max |w|) of its kernel,
  divided by that layer's largest score, so every score is in [0, 1];
- the layers of one group are combined by the `equalization` rule (see `_EQUALIZE`);
- a channel whose combined score is below `threshold` is removed (or, with `ratio`, that fraction
  of the lowest-scoring channels of every group); the kept count is then raised to at least
  `min_num_filters` and rounded up to a multiple of `granularity`, never above the original.

A pruned model's layer sizes differ from the architecture's builder, so a checkpoint stores
`layer_shapes(model)` (plain JSON-able data) beside the state dict; `apply_layer_shapes` resizes a
freshly built model to match before `load_state_dict`. Both load with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd

from ..errors import ModelError, SpecError

NORMS = ("l2", "max")

# How the scores of coupled layers (e.g. every conv feeding one residual add) combine into one
# score per channel, as TAO's -eq option. TAO: "union" keeps a channel if any coupled layer would
# keep it (element-wise max), "intersection" only if every layer would (element-wise min).
# torch-pruning's own group_reduction has "max" and "mean" but no "min" and only an unrooted
# "prod", so we compute all four here on the max-normalised per-layer scores.
_EQUALIZE = {
    "union": lambda s: s.nan_to_num(nan=-math.inf).amax(dim=0),
    "intersection": lambda s: s.nan_to_num(nan=math.inf).amin(dim=0),
    "arithmetic_mean": lambda s: s.nanmean(dim=0),
    "geometric_mean": lambda s: s.clamp_min(1e-12).log().nanmean(dim=0).exp(),
}


@dataclass
class PruneConfig:
    """TAO-style pruning settings. Give exactly one of `threshold` and `ratio`."""

    threshold: float | None = None  # remove channels whose normalised score is below this, in [0, 1]
    ratio: float | None = None  # or: remove this fraction of channels in every group, in [0, 1)
    norm: str = "l2"  # "l2" or "max" (largest |weight| of the filter)
    granularity: int = 8  # kept channel counts are multiples of this (rounded up)
    min_num_filters: int = 16  # never keep fewer channels than this in a layer
    equalization: str = "union"  # union | intersection | arithmetic_mean | geometric_mean
    excluded_layers: list[str] = field(default_factory=list)  # module names whose outputs stay whole

    def __post_init__(self) -> None:
        if (self.threshold is None) == (self.ratio is None):
            raise SpecError(
                "prune: give exactly one of prune.threshold (e.g. 0.1) and prune.ratio (e.g. 0.3), "
                f"got threshold={self.threshold}, ratio={self.ratio}"
            )
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise SpecError(f"prune.threshold must be in [0, 1] (scores are normalised by each layer's max), got {self.threshold}")
        if self.ratio is not None and not 0.0 <= self.ratio < 1.0:
            raise SpecError(f"prune.ratio is the fraction of channels to remove, in [0, 1), got {self.ratio}")
        if self.norm not in NORMS:
            raise SpecError(f"prune.norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.equalization not in _EQUALIZE:
            raise SpecError(f"prune.equalization must be one of {', '.join(_EQUALIZE)}, got {self.equalization!r}")
        if self.granularity < 1:
            raise SpecError(f"prune.granularity must be at least 1, got {self.granularity}")
        if self.min_num_filters < 0:
            raise SpecError(f"prune.min_num_filters must be 0 or more, got {self.min_num_filters}")


@dataclass
class PrunedLayer:
    name: str
    kept: int  # output channels (or features) after pruning
    total: int  # before pruning


@dataclass
class PruneResult:
    model: nn.Module
    layers: list[PrunedLayer]  # every conv and linear layer of the model, in module order
    params_before: int
    params_after: int

    @property
    def pruned_layers(self) -> list[PrunedLayer]:
        return [row for row in self.layers if row.kept < row.total]


def prune_model(
    model: nn.Module,
    example_inputs: torch.Tensor | tuple[torch.Tensor, ...],
    cfg: PruneConfig,
    ignored_layers: Sequence[nn.Module] = (),
) -> PruneResult:
    """Remove low-importance channels in place; the model is left in eval mode on the CPU.

    Output channels of `ignored_layers`, of `cfg.excluded_layers` and of any conv/linear whose
    output tensor is returned by the model as is (e.g. resnet's `fc`) are never pruned; a whole
    coupled group is left alone when one of its layers is protected. Pass the classifier in
    `ignored_layers` anyway when the model reshapes its head's output before returning it.
    Grouped (not depthwise) convs are left unpruned.
    """
    model.cpu().eval()
    example_inputs = tuple(t.cpu() for t in (example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)))
    names = dict((m, n) for n, m in model.named_modules())
    protected = list(ignored_layers) + _modules_by_name(model, cfg.excluded_layers) + _output_layers(model, example_inputs)
    totals = {m: _out_channels(m) for m in model.modules() if isinstance(m, (_ConvNd, nn.Linear))}
    params_before = sum(p.numel() for p in model.parameters())

    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs, verbose=False)
    # Decide every group on the unpruned weights first (as TAO does): pruning one group removes
    # input channels of the next layers and would change their norms.
    plan = []
    for group in graph.get_all_groups(ignored_layers=protected, root_module_types=(_ConvNd, nn.Linear)):
        if _has_grouped_conv(group):
            continue
        scores = _group_scores(group, graph, cfg)
        keep = _kept_count(scores, cfg)
        if keep < len(scores):
            root = group[0].dep
            plan.append((root.target.module, root.handler, torch.argsort(scores)[: len(scores) - keep].tolist()))
    for module, handler, remove in plan:
        graph.get_pruning_group(module, handler, remove).prune()

    rows = [PrunedLayer(names[m], _out_channels(m), total) for m, total in totals.items()]
    params_after = sum(p.numel() for p in model.parameters())
    return PruneResult(model=model, layers=rows, params_before=params_before, params_after=params_after)


def _kept_count(scores: torch.Tensor, cfg: PruneConfig) -> int:
    total = len(scores)
    if cfg.threshold is not None:
        keep = int((scores >= cfg.threshold).sum())
    else:
        keep = total - int(total * cfg.ratio)
    keep = max(keep, cfg.min_num_filters, 1)
    keep = math.ceil(keep / cfg.granularity) * cfg.granularity
    return min(keep, total)


def _group_scores(group: Any, graph: tp.DependencyGraph, cfg: PruneConfig) -> torch.Tensor:
    """One score in [0, 1] per channel of the group's root layer (see `_EQUALIZE`)."""
    n_root = len(group[0].idxs)
    scored, depthwise = [], []
    for item in group:
        layer = item.dep.target.module
        if not graph.is_out_channel_pruning_fn(item.dep.handler) or not isinstance(layer, (_ConvNd, nn.Linear)):
            continue
        if any(r is None for r in item.root_idxs):
            continue
        w = layer.weight.detach()
        if getattr(layer, "transposed", False):
            w = w.transpose(0, 1)
        w = w[item.idxs].flatten(1).float()
        s = w.norm(dim=1) if cfg.norm == "l2" else w.abs().amax(dim=1)
        s = s / s.max().clamp_min(1e-12)
        row = torch.full((n_root,), math.nan)
        row[torch.tensor(item.root_idxs)] = s
        # A depthwise conv's channels follow the conv that feeds it (as in TAO): its kernels only
        # count when the group has nothing else to score.
        (depthwise if _is_depthwise(layer) else scored).append(row)
    rows = scored or depthwise
    if not rows:
        return torch.ones(n_root)
    combined = _EQUALIZE[cfg.equalization](torch.stack(rows))
    return combined.nan_to_num(nan=1.0)


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, _ConvNd) and m.groups > 1 and m.groups == m.out_channels == m.in_channels


def _has_grouped_conv(group: Any) -> bool:
    return any(
        isinstance(item.dep.target.module, _ConvNd)
        and item.dep.target.module.groups > 1
        and not _is_depthwise(item.dep.target.module)
        for item in group
    )


def _out_channels(m: nn.Module) -> int:
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


def _modules_by_name(model: nn.Module, names: Sequence[str]) -> list[nn.Module]:
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        examples = [n for n, m in modules.items() if isinstance(m, (_ConvNd, nn.Linear))][:6]
        raise SpecError(
            f"prune.excluded_layers: {', '.join(map(repr, missing))} is not a module of the model; "
            f"use module names such as {', '.join(examples)}"
        )
    return [modules[n] for n in names]


def _output_layers(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> list[nn.Module]:
    """Conv/linear layers whose output tensor the model returns unchanged (its prediction heads)."""
    # Keyed by id(); holding the tensor too keeps its id from being reused by a later tensor.
    produced: dict[int, tuple[nn.Module, torch.Tensor]] = {}

    def remember(module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            produced[id(output)] = (module, output)

    hooks = [m.register_forward_hook(remember) for m in model.modules() if isinstance(m, (_ConvNd, nn.Linear))]
    try:
        with torch.no_grad():
            outputs = model(*example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return [produced[id(t)][0] for t in output_tensors(outputs) if id(t) in produced]


def output_tensors(x: Any) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        x = list(x.values())
    if isinstance(x, (list, tuple)):
        return [t for item in x for t in output_tensors(item)]
    return []


# ---- pruned checkpoints: layer sizes as plain data ------------------------------------------


def layer_shapes(model: nn.Module) -> dict[str, dict]:
    """The channel sizes of every conv, linear and norm layer, as JSON-able data keyed by module name."""
    shapes: dict[str, dict] = {}
    for name, m in model.named_modules():
        if isinstance(m, _ConvNd):
            shapes[name] = {"type": type(m).__name__, "in_channels": m.in_channels,
                            "out_channels": m.out_channels, "groups": m.groups}
        elif isinstance(m, nn.Linear):
            shapes[name] = {"type": "Linear", "in_features": m.in_features, "out_features": m.out_features}
        elif isinstance(m, _NormBase):  # BatchNorm*, InstanceNorm*, SyncBatchNorm
            shapes[name] = {"type": type(m).__name__, "num_features": m.num_features}
        elif isinstance(m, nn.LayerNorm):
            shapes[name] = {"type": "LayerNorm", "normalized_shape": list(m.normalized_shape)}
        elif isinstance(m, nn.GroupNorm):
            shapes[name] = {"type": "GroupNorm", "num_groups": m.num_groups, "num_channels": m.num_channels}
        elif isinstance(m, nn.PReLU):
            shapes[name] = {"type": "PReLU", "num_parameters": m.num_parameters}
        elif isinstance(m, nn.Embedding):
            shapes[name] = {"type": "Embedding", "num_embeddings": m.num_embeddings, "embedding_dim": m.embedding_dim}
    return shapes


def apply_layer_shapes(model: nn.Module, shapes: dict[str, dict]) -> nn.Module:
    """Resize the layers of a freshly built model to `shapes` so a pruned state dict loads strictly.

    Resized layers get new zero-filled parameters and buffers: load the pruned weights next.
    """
    modules = dict(model.named_modules())
    for name, shape in shapes.items():
        m = modules.get(name)
        if m is None or type(m).__name__ != shape.get("type"):
            found = "nothing" if m is None else type(m).__name__
            raise ModelError(
                f"pruned checkpoint describes layer {name!r} as {shape.get('type')}, but the model has {found} "
                "there: build the same architecture (backbone, class count) that was pruned"
            )
        if isinstance(m, _ConvNd):
            _resize_conv(m, shape["in_channels"], shape["out_channels"], shape["groups"])
        elif isinstance(m, nn.Linear):
            m.in_features, m.out_features = shape["in_features"], shape["out_features"]
            _resize(m, "weight", (m.out_features, m.in_features))
            _resize(m, "bias", (m.out_features,))
        elif isinstance(m, _NormBase):
            m.num_features = n = shape["num_features"]
            for attr in ("weight", "bias", "running_mean", "running_var"):
                _resize(m, attr, (n,), fill=1.0 if attr == "running_var" else 0.0)
        elif isinstance(m, nn.LayerNorm):
            m.normalized_shape = tuple(shape["normalized_shape"])
            _resize(m, "weight", m.normalized_shape)
            _resize(m, "bias", m.normalized_shape)
        elif isinstance(m, nn.GroupNorm):
            m.num_groups, m.num_channels = shape["num_groups"], shape["num_channels"]
            _resize(m, "weight", (m.num_channels,))
            _resize(m, "bias", (m.num_channels,))
        elif isinstance(m, nn.PReLU):
            m.num_parameters = shape["num_parameters"]
            _resize(m, "weight", (m.num_parameters,))
        elif isinstance(m, nn.Embedding):
            m.num_embeddings, m.embedding_dim = shape["num_embeddings"], shape["embedding_dim"]
            _resize(m, "weight", (m.num_embeddings, m.embedding_dim))
    return model


def _resize_conv(m: _ConvNd, in_channels: int, out_channels: int, groups: int) -> None:
    m.in_channels, m.out_channels, m.groups = in_channels, out_channels, groups
    if m.transposed:
        weight = (in_channels, out_channels // groups, *m.kernel_size)
    else:
        weight = (out_channels, in_channels // groups, *m.kernel_size)
    _resize(m, "weight", weight)
    _resize(m, "bias", (out_channels,))


def _resize(m: nn.Module, attr: str, shape: Sequence[int], fill: float = 0.0) -> None:
    """Replace parameter or buffer `attr` (if the module has one) by a new tensor of `shape`."""
    old = getattr(m, attr, None)
    if not isinstance(old, torch.Tensor) or tuple(old.shape) == tuple(shape):
        return
    new = torch.full(tuple(shape), fill, dtype=old.dtype, device=old.device)
    if isinstance(old, nn.Parameter):
        setattr(m, attr, nn.Parameter(new, requires_grad=old.requires_grad))
    else:
        setattr(m, attr, new)  # a registered buffer stays registered when reassigned
