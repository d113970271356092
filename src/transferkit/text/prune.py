"""Structured pruning of a BERT-style encoder: whole attention heads and FFN neurons, in place.

What is removed, per encoder layer (`<layer>.attention.self.{query,key,value}`, `<layer>.attention.output.dense`,
`<layer>.intermediate.dense`, `<layer>.output.dense`: BERT and the models that copy its layout, e.g. RoBERTa,
ELECTRA, XLM-R, MiniLM):

- a head h is the rows [h*d, (h+1)*d) of query, key and value (d = attention_head_size) and the same columns of
  attention.output.dense. Its score is ||W_value[h]|| x ||W_out[:, h]|| (Frobenius norms): the attention weights
  are a convex combination, so this product bounds how much the head can add to the residual stream; query and key
  only shape where it looks. The value bias of a removed head reaches the output as the constant
  W_out[:, h] @ b_value[h] (attention weights sum to 1), so it is folded into attention.output.dense's bias.
- an FFN neuron j is row j of intermediate.dense and column j of output.dense, scored ||[W_in[j], b_in[j]]|| x
  ||W_out[:, j]||.
- `importance: activation` scores instead what each head and neuron adds to the residual stream on the example
  batch (mean over its unpadded tokens of ||W_out[:, h] @ context_h|| and |a_j| x ||W_out[:, j]||). On all-MiniLM-L6-v2
  it keeps the pruned encoder much closer to the original than weight norms when the example holds real sentences,
  and is no better than them on random token ids, so it is only worth choosing when the caller passes real text.

How many go: with `scope: layer` every layer loses floor(ratio x its count) heads (never below `min_heads`) and
neurons; with `scope: global` floor(ratio x the network's count) of the lowest scores go, each score divided by the
largest in its layer so layers compare. Kept FFN widths are then rounded up to a multiple of `granularity`, so
slightly fewer neurons than the ratio may go.

The hidden size (residual stream, embeddings, LayerNorms, classifier) is never changed, so the pruned net's inputs
and outputs are those of the original.

Why a direct implementation rather than torch-pruning: transformers 5.x attention reshapes with
`view(*shape, -1, attention_head_size)`, so slicing the four linears is all the forward needs (we still update
`num_attention_heads` and `all_head_size`, which nothing in the forward reads). torch-pruning's graph couples the
residual stream through every layer and, untold, shrinks the hidden size, embeddings and LayerNorms too (which
changes LayerNorm statistics), so it would need every residual producer excluded; it does not fold the value bias
and leaves the HF modules' head-count attributes stale. The direct slice needs no tracing and is exact.

A pruned encoder no longer matches its HF config (per-layer head counts and FFN widths differ), so a checkpoint
stores `transformer_shapes(net)` and the loader calls `apply_transformer_shapes` on a freshly built net.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from ..errors import ModelError
from ..optimize.prune import PrunedLayer, PruneResult
from ..spec import SpecModel

log = logging.getLogger("transferkit")

SHAPES_FORMAT = "transformer-heads-ffn/1"


class TextPruneConfig(SpecModel):
    """The `prune` section of the NLP tasks: fractions of attention heads and FFN neurons to remove."""

    head_ratio: float = Field(
        0.25, ge=0, lt=1, description="fraction of attention heads to remove (0 = keep all heads); see scope"
    )
    ffn_ratio: float = Field(
        0.25, ge=0, lt=1, description="fraction of FFN (intermediate) neurons to remove (0 = keep all); see scope"
    )
    scope: Literal["layer", "global"] = Field(
        "layer",
        description="layer: every layer loses the same fraction (uniform, predictable speed-up) | global: rank "
                    "heads and neurons across all layers (scores divided by each layer's largest), so weak layers lose more",
    )
    min_heads: int = Field(1, ge=1, description="never keep fewer attention heads than this in a layer")
    granularity: int = Field(
        8, ge=1, description="kept FFN widths are rounded up to a multiple of this (8 or 16 suit fast matmul kernels)"
    )
    importance: Literal["l2", "activation"] = Field(
        "l2", description="l2: weight norms (value x output projection per head, input x output per neuron) | "
                          "activation: each head's and neuron's mean output on the example sentences (needs real text)"
    )
    evaluate: bool = Field(False, description="score the val set with the pruned, not yet retrained model, into "
                           "prune_report.json (val_after_prune)")


@dataclass
class _Layer:
    """One encoder layer's prunable linears, found by name."""

    name: str  # module path inside the net, e.g. model.bert.encoder.layer.0
    attn: nn.Module  # the self-attention module (query, key, value, num_attention_heads ...)
    attn_out: nn.Linear
    ffn_in: nn.Linear
    ffn_out: nn.Linear

    @property
    def head_size(self) -> int:
        return int(self.attn.attention_head_size)

    @property
    def heads(self) -> int:
        return self.attn.query.out_features // self.head_size

    @property
    def ffn(self) -> int:
        return self.ffn_in.out_features


def prune_transformer(net: nn.Module, example: tuple[torch.Tensor, ...], cfg: TextPruneConfig) -> PruneResult:
    """Remove the lowest-scoring heads and FFN neurons of every encoder layer in place (hidden size unchanged).

    `example` (input_ids, attention_mask): the batch `importance: activation` scores on; it is also run once
    afterwards to prove the pruned net still computes.
    """
    layers = _find_layers(net)
    params_before = _count(net)
    totals = [(layer.heads, layer.ffn) for layer in layers]
    # Every layer's plan is decided on the unpruned network.
    if cfg.importance == "activation":
        head_scores, ffn_scores = _activation_scores(net, layers, example)
    else:
        head_scores = [_head_scores(layer) for layer in layers]
        ffn_scores = [_ffn_scores(layer) for layer in layers]
    head_keep = _head_counts(head_scores, cfg)
    ffn_keep = _ffn_counts(ffn_scores, cfg)
    with torch.no_grad():
        for layer, hs, hk, fs, fk in zip(layers, head_scores, head_keep, ffn_scores, ffn_keep):
            if hk < len(hs):
                _keep_heads(layer, _top(hs, hk), fold_bias=True)
            if fk < len(fs):
                _keep_neurons(layer, _top(fs, fk))
    if cfg.head_ratio == 0 and cfg.ffn_ratio == 0:
        log.warning("prune: prune.head_ratio and prune.ffn_ratio are both 0, so nothing was removed")
    _check_forward(net, example)
    rows = []
    for layer, (heads, ffn) in zip(layers, totals):
        rows.append(PrunedLayer(f"{layer.name}.attention (heads)", layer.heads, heads))
        rows.append(PrunedLayer(f"{layer.name}.intermediate (FFN neurons)", layer.ffn, ffn))
    return PruneResult(model=net, layers=rows, params_before=params_before, params_after=_count(net))


def transformer_shapes(net: nn.Module) -> dict[str, Any]:
    """Heads and FFN width of every encoder layer (JSON-able), for `apply_transformer_shapes` to rebuild."""
    return {
        "format": SHAPES_FORMAT,
        "layers": {layer.name: {"heads": layer.heads, "head_size": layer.head_size, "ffn": layer.ffn}
                   for layer in _find_layers(net)},
    }


def apply_transformer_shapes(net: nn.Module, shapes: Mapping[str, Any]) -> nn.Module:
    """Shrink a freshly built, unpruned net to `shapes` so the pruned state dict loads with strict=True.

    The kept slices are the first heads/neurons of each layer: the weights loaded next overwrite them.
    """
    if not isinstance(shapes, Mapping) or shapes.get("format") != SHAPES_FORMAT \
            or not isinstance(shapes.get("layers"), Mapping):
        found = shapes.get("format") if isinstance(shapes, Mapping) else type(shapes).__name__
        raise ModelError(f"pruned_shapes of this model are not text-pruning shapes ({SHAPES_FORMAT}), found {found!r}: "
                         "the checkpoint was not written by an NLP task's prune")
    layers = {layer.name: layer for layer in _find_layers(net)}
    wanted: Mapping[str, Any] = shapes["layers"]
    if set(wanted) != set(layers):
        raise ModelError(
            f"the pruned checkpoint has encoder layers {_names(wanted)}, the built model has {_names(layers)}: "
            "build the same architecture (model.backbone, head) that was pruned"
        )
    plan = []
    for name, shape in wanted.items():
        layer = layers[name]
        heads, head_size, ffn = (shape.get(k) for k in ("heads", "head_size", "ffn"))
        if head_size != layer.head_size or not isinstance(heads, int) or not isinstance(ffn, int) \
                or not 1 <= heads <= layer.heads or not 1 <= ffn <= layer.ffn:
            raise ModelError(
                f"the pruned checkpoint's layer {name} has {heads} heads of size {head_size} and FFN width {ffn}, "
                f"which the built model ({layer.heads} heads of size {layer.head_size}, FFN {layer.ffn}) cannot hold: "
                "build the architecture that was pruned"
            )
        plan.append((layer, heads, ffn))
    with torch.no_grad():
        for layer, heads, ffn in plan:
            if heads < layer.heads:
                _keep_heads(layer, torch.arange(heads), fold_bias=False)
            if ffn < layer.ffn:
                _keep_neurons(layer, torch.arange(ffn))
    return net


# ---- finding the layers ---------------------------------------------------------------------


def _find_layers(net: nn.Module) -> list[_Layer]:
    found = []
    for name, m in net.named_modules():
        attention, intermediate, output = (getattr(m, a, None) for a in ("attention", "intermediate", "output"))
        attn = getattr(attention, "self", None)
        if not all(isinstance(getattr(attn, p, None), nn.Linear) for p in ("query", "key", "value")):
            continue
        attn_out = getattr(getattr(attention, "output", None), "dense", None)
        ffn_in = getattr(intermediate, "dense", None)
        ffn_out = getattr(output, "dense", None)
        if not all(isinstance(x, nn.Linear) for x in (attn_out, ffn_in, ffn_out)) \
                or not isinstance(getattr(attn, "attention_head_size", None), int):
            continue
        found.append(_Layer(name, attn, attn_out, ffn_in, ffn_out))
    if not found:
        raise ModelError(
            f"prune: {type(getattr(net, 'model', net)).__name__} has no BERT-style encoder layers "
            "(attention.self.query/key/value, attention.output.dense, intermediate.dense, output.dense); "
            "head and FFN pruning supports BERT, RoBERTa, ELECTRA, XLM-R and MiniLM backbones"
        )
    return found


def _names(d: Mapping) -> str:
    names = list(d)
    return f"{len(names)} ({names[0]} ...)" if names else "none"


# ---- scores and counts ----------------------------------------------------------------------


def _head_scores(layer: _Layer) -> torch.Tensor:
    d = layer.head_size
    v = layer.attn.value.weight.detach().float().reshape(layer.heads, d, -1)
    o = layer.attn_out.weight.detach().float().reshape(layer.attn_out.out_features, layer.heads, d)
    return v.flatten(1).norm(dim=1) * o.transpose(0, 1).flatten(1).norm(dim=1)


def _ffn_scores(layer: _Layer) -> torch.Tensor:
    w_in = layer.ffn_in.weight.detach().float()
    if layer.ffn_in.bias is not None:
        w_in = torch.cat([w_in, layer.ffn_in.bias.detach().float()[:, None]], dim=1)
    return w_in.norm(dim=1) * layer.ffn_out.weight.detach().float().norm(dim=0)


def _activation_scores(net: nn.Module, layers: list[_Layer],
                       example: tuple[torch.Tensor, ...]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Mean norm of each head's and each FFN neuron's contribution to the residual stream over the example's tokens."""
    mask = example[1].bool().reshape(-1) if len(example) > 1 else None
    sums: dict[tuple[int, str], torch.Tensor] = {}

    def tokens(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().float().reshape(-1, x.shape[-1])
        return x[mask.to(x.device)] if mask is not None and len(mask) == len(x) else x

    def heads(i: int, layer: _Layer, x: torch.Tensor) -> None:
        d, n = layer.head_size, layer.heads
        w = layer.attn_out.weight.detach().float().reshape(-1, n, d)  # hidden x heads x d
        ctx = tokens(x).reshape(-1, n, d)
        sums[i, "heads"] = torch.einsum("thd,ohd->tho", ctx, w).norm(dim=2).mean(dim=0)

    def neurons(i: int, layer: _Layer, x: torch.Tensor) -> None:
        sums[i, "ffn"] = tokens(x).abs().mean(dim=0) * layer.ffn_out.weight.detach().float().norm(dim=0)

    hooks = []
    for i, layer in enumerate(layers):
        hooks.append(layer.attn_out.register_forward_pre_hook(lambda _m, a, i=i, layer=layer: heads(i, layer, a[0])))
        hooks.append(layer.ffn_out.register_forward_pre_hook(lambda _m, a, i=i, layer=layer: neurons(i, layer, a[0])))
    training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(*example)
    finally:
        net.train(training)
        for h in hooks:
            h.remove()
    return [sums[i, "heads"].cpu() for i in range(len(layers))], [sums[i, "ffn"].cpu() for i in range(len(layers))]


def _head_counts(scores: list[torch.Tensor], cfg: TextPruneConfig) -> list[int]:
    floors = [min(cfg.min_heads, len(s)) for s in scores]
    if cfg.scope == "layer":
        return [max(len(s) - math.floor(len(s) * cfg.head_ratio), floor) for s, floor in zip(scores, floors)]
    keep = [len(s) for s in scores]
    to_remove = math.floor(sum(keep) * cfg.head_ratio)
    for i in _global_order(scores):
        if to_remove == 0:
            break
        if keep[i] > floors[i]:  # a layer at min_heads keeps its remaining heads; the next-weakest goes instead
            keep[i] -= 1
            to_remove -= 1
    return keep


def _ffn_counts(scores: list[torch.Tensor], cfg: TextPruneConfig) -> list[int]:
    if cfg.scope == "layer":
        keep = [len(s) - math.floor(len(s) * cfg.ffn_ratio) for s in scores]
    else:
        keep = [len(s) for s in scores]
        for i in _global_order(scores)[: math.floor(sum(keep) * cfg.ffn_ratio)]:
            keep[i] -= 1
    g = cfg.granularity
    return [min(len(s), max(g, math.ceil(k / g) * g)) for s, k in zip(scores, keep)]


def _global_order(scores: list[torch.Tensor]) -> list[int]:
    """Layer index of every unit, weakest first, on scores divided by their layer's largest."""
    normed = torch.cat([s / s.max().clamp_min(1e-12) for s in scores])
    owner = torch.cat([torch.full((len(s),), i) for i, s in enumerate(scores)])
    # A stable sort keeps ties (e.g. several zero scores) in layer order, so results are reproducible.
    return owner[torch.sort(normed, stable=True).indices].tolist()


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest scores, in their original order (so kept heads stay in sequence)."""
    return torch.sort(torch.sort(scores, descending=True, stable=True).indices[:k]).values


# ---- slicing --------------------------------------------------------------------------------


def _keep_heads(layer: _Layer, heads: torch.Tensor, fold_bias: bool) -> None:
    d, attn = layer.head_size, layer.attn
    rows = (heads[:, None] * d + torch.arange(d)).flatten()
    if fold_bias and attn.value.bias is not None and layer.attn_out.bias is not None:
        gone = torch.ones(attn.value.out_features, dtype=torch.bool)
        gone[rows] = False
        gone = gone.to(attn.value.bias.device)
        w = layer.attn_out.weight[:, gone]
        layer.attn_out.bias += w @ attn.value.bias[gone].to(w.dtype)
    for proj in (attn.query, attn.key, attn.value):
        _slice(proj, rows=rows)
    _slice(layer.attn_out, cols=rows)
    # Nothing in transformers 5.x's attention forward reads these (it reshapes with -1), but other code may.
    attn.num_attention_heads = len(heads)
    attn.all_head_size = len(heads) * d


def _keep_neurons(layer: _Layer, neurons: torch.Tensor) -> None:
    _slice(layer.ffn_in, rows=neurons)
    _slice(layer.ffn_out, cols=neurons)


def _slice(linear: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> None:
    """Keep output features `rows` and input features `cols` of `linear`, as new parameters."""
    weight = linear.weight.detach()
    if rows is not None:
        weight = weight[rows.to(weight.device)]
        if linear.bias is not None:
            linear.bias = nn.Parameter(linear.bias.detach()[rows.to(weight.device)].clone(),
                                       requires_grad=linear.bias.requires_grad)
    if cols is not None:
        weight = weight[:, cols.to(weight.device)]
    linear.weight = nn.Parameter(weight.clone(), requires_grad=linear.weight.requires_grad)
    linear.out_features, linear.in_features = weight.shape


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _check_forward(net: nn.Module, example: tuple[torch.Tensor, ...]) -> None:
    training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(*example)
    except Exception as e:  # a transformers version whose attention still reads the old head count
        raise ModelError(f"prune: the pruned model no longer runs ({type(e).__name__}: {e}); this transformers "
                         "version's attention layer is not supported by head pruning, set prune.head_ratio=0") from e
    finally:
        net.train(training)
