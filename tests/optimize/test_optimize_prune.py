import json

import pytest
import torch
import torchvision
from torch import nn

from transferkit.errors import ModelError, SpecError
from transferkit.io import atomic_torch_save, safe_torch_load
from transferkit.optimize import PruneConfig, apply_layer_shapes, layer_shapes, prune_model

SIZE = 32


def build(arch: str) -> nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, arch)(weights=None, num_classes=10).eval()


def head(model: nn.Module) -> nn.Module:
    return model.fc if hasattr(model, "fc") else model.classifier[-1]


def prune(arch: str, **cfg) -> tuple[nn.Module, object]:
    model = build(arch)
    result = prune_model(model, torch.randn(1, 3, SIZE, SIZE), PruneConfig(**cfg), ignored_layers=[head(model)])
    return model, result


def pruned_convs(model: nn.Module, original: nn.Module) -> list[tuple[str, int, int]]:
    before = {n: m.out_channels for n, m in original.named_modules() if isinstance(m, nn.Conv2d)}
    return [(n, m.out_channels, before[n]) for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.out_channels < before[n]]


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_pruned_model_keeps_output_shape_and_channel_rules(arch):
    model, result = prune(arch, threshold=0.9, granularity=8, min_num_filters=16)
    out = model(torch.randn(3, 3, SIZE, SIZE))
    assert out.shape == (3, 10)
    convs = pruned_convs(model, build(arch))
    assert convs, "threshold 0.9 on random weights should prune some convs"
    for name, kept, total in convs:
        assert kept % 8 == 0 and kept >= 16, (name, kept, total)
    assert result.params_after < result.params_before
    rows = {row.name: (row.kept, row.total) for row in result.layers}
    for name, kept, total in convs:
        assert rows[name] == (kept, total)
    assert head(model).out_features == 10


def test_depthwise_convs_keep_groups_equal_to_channels():
    model, _ = prune("mobilenet_v2", ratio=0.5)
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise
    for m in depthwise:
        assert m.groups == m.in_channels == m.out_channels


def test_threshold_zero_prunes_nothing():
    model, result = prune("resnet18", threshold=0.0)
    assert result.params_after == result.params_before
    assert not result.pruned_layers


def test_higher_threshold_prunes_more():
    params = [prune("mobilenet_v2", threshold=t)[1].params_after for t in (0.5, 0.85, 0.9)]
    assert params[0] > params[1] > params[2]


def test_ratio_removes_about_that_fraction_of_channels():
    _, result = prune("resnet18", ratio=0.5, granularity=1, min_num_filters=1)
    pruned = result.pruned_layers
    assert pruned
    for row in pruned:
        assert row.kept == row.total // 2


def test_kept_count_rounds_up_to_granularity_but_never_exceeds_original():
    # 20 channels: 4 strong filters, 16 weak ones. Threshold keeps 4, min_num_filters lifts to 6,
    # granularity 8 rounds up to 8.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 20, 3), nn.ReLU(), nn.Conv2d(20, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        model[0].weight[4:] *= 0.01
    prune_model(model, torch.randn(1, 3, 16, 16), PruneConfig(threshold=0.5, granularity=8, min_num_filters=6))
    assert model[0].out_channels == 8
    assert model[2].out_channels == 4  # its output is the model's output: never pruned

    small = nn.Sequential(nn.Conv2d(3, 12, 3), nn.ReLU(), nn.Conv2d(12, 4, 1))
    prune_model(small, torch.randn(1, 3, 16, 16), PruneConfig(ratio=0.3, granularity=8, min_num_filters=1))
    assert small[0].out_channels == 12  # 9 kept -> 16 by granularity -> capped at the original 12


def test_low_norm_filters_are_the_ones_removed():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 5, 1))
    with torch.no_grad():
        model[0].weight[1::2] *= 0.05  # odd filters are weak
    strong = model[0].weight[0::2].clone()
    prune_model(model, torch.randn(1, 3, 16, 16), PruneConfig(threshold=0.3, granularity=8, min_num_filters=8))
    assert model[0].out_channels == 16 and model[1].num_features == 16 and model[3].in_channels == 16
    assert torch.equal(model[0].weight, strong)


def test_max_norm_runs_and_prunes():
    _, result = prune("mobilenet_v2", threshold=0.9, norm="max")
    assert result.params_after < result.params_before


def test_equalization_modes_order_coupled_groups():
    # Scores per channel: max >= arithmetic mean >= geometric mean >= min, so "union" keeps the most.
    params = {eq: prune("resnet18", threshold=0.9, equalization=eq)[1].params_after
              for eq in ("union", "arithmetic_mean", "geometric_mean", "intersection")}
    assert params["union"] >= params["arithmetic_mean"] >= params["geometric_mean"] >= params["intersection"]
    assert params["union"] > params["intersection"]


def test_excluded_layers_keep_their_output_channels():
    model, _ = prune("mobilenet_v2", ratio=0.5, excluded_layers=["features.2.conv.0.0", "features.18.0"])
    assert model.features[2].conv[0][0].out_channels == 96
    assert model.features[18][0].out_channels == 1280
    assert model.features[3].conv[0][0].out_channels < 144


def test_unknown_excluded_layer_is_a_spec_error():
    with pytest.raises(SpecError, match="layer9"):
        prune("resnet18", ratio=0.5, excluded_layers=["layer9"])


@pytest.mark.parametrize("cfg", [{}, {"threshold": 0.1, "ratio": 0.2}, {"threshold": 1.5},
                                 {"ratio": 0.1, "equalization": "avg"}, {"ratio": 0.1, "norm": "l1"}])
def test_invalid_config_is_a_spec_error(cfg):
    with pytest.raises(SpecError):
        PruneConfig(**cfg)


def test_output_layer_is_protected_without_being_passed():
    model = build("resnet18")
    prune_model(model, torch.randn(1, 3, SIZE, SIZE), PruneConfig(ratio=0.5))
    assert model.fc.out_features == 10


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_pruned_checkpoint_round_trips_with_weights_only(arch, tmp_path):
    model, _ = prune(arch, ratio=0.5)
    path = atomic_torch_save({"layer_shapes": layer_shapes(model), "state_dict": model.state_dict()},
                             tmp_path / "pruned.ckpt")
    checkpoint = safe_torch_load(path)  # torch.load(weights_only=True)
    json.dumps(checkpoint["layer_shapes"])  # plain data

    fresh = build(arch)
    apply_layer_shapes(fresh, checkpoint["layer_shapes"])
    fresh.load_state_dict(checkpoint["state_dict"], strict=True)
    fresh.eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_layer_shapes_from_another_architecture_are_refused():
    shapes = layer_shapes(build("resnet18"))
    with pytest.raises(ModelError, match="same architecture"):
        apply_layer_shapes(build("mobilenet_v2"), shapes)
