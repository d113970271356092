"""The YOLOv4-tiny network: head shapes per backbone, darknet's layer sizes, the CSP split, pruning."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from transferkit.errors import SpecError
from transferkit.optimize import PruneConfig, apply_layer_shapes, layer_shapes, prune_model
from transferkit.tasks.detection.yolo_v4_tiny.model import CSPDarknetTiny, CSPTinyBlock, build_yolo_v4_tiny, check_input_size


@pytest.mark.parametrize("backbone", ["cspdarknet_tiny", "mobilenet_v2"])
def test_two_heads_at_strides_32_and_16_with_three_anchors_each(backbone):
    net = build_yolo_v4_tiny(backbone, num_classes=4, pretrained=False).eval()
    big, mid = net(torch.zeros(2, 3, 96, 128))
    assert big.shape == (2, 3 * 9, 3, 4) and mid.shape == (2, 3 * 9, 6, 8)


def test_cspdarknet_tiny_matches_darknet_layer_sizes():
    body = CSPDarknetTiny().eval()
    features = body(torch.zeros(1, 3, 416, 416))
    assert [f.shape[1:] for f in features] == [(32, 208, 208), (64, 104, 104), (128, 52, 52), (256, 26, 26),
                                                (512, 13, 13)]
    # Darknet's yolov4-tiny (80 classes) is published as 6.06 M parameters.
    net = build_yolo_v4_tiny("cspdarknet_tiny", 80)
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(6.06e6, rel=0.01)


def test_split_convs_equal_darknets_single_conv_with_a_channel_split():
    block = CSPTinyBlock(8, 16, "leaky_relu").eval()
    x = torch.randn(1, 8, 12, 12)
    # Darknet's single 3x3 conv: both halves stacked; its route takes the second half.
    whole = nn.Conv2d(8, 16, 3, padding=1, bias=False)
    whole.weight.data = torch.cat([block.conv_a[0].weight, block.conv_b[0].weight])
    bn = nn.BatchNorm2d(16).eval()
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(bn, name).data = torch.cat([getattr(block.conv_a[1], name), getattr(block.conv_b[1], name)])
    y = nn.functional.leaky_relu(bn(whole(x)), 0.1)
    second = torch.chunk(y, 2, dim=1)[1]
    a = block.part1(second)
    route = block.join(torch.cat([block.part2(a), a], 1))
    pooled, got_route = block(x)
    assert torch.allclose(got_route, route, atol=1e-6)
    assert torch.allclose(pooled, nn.functional.max_pool2d(torch.cat([y, route], 1), 2), atol=1e-6)


def test_mobilenet_backbone_loads_imagenet_weights():
    net = build_yolo_v4_tiny("mobilenet_v2", 3, pretrained=True)
    info = net.backbone.pretrained_info
    assert info is not None and info.tensors_loaded > 100


def test_mish_activation_is_used_when_asked():
    net = build_yolo_v4_tiny("cspdarknet_tiny", 2, activation="mish")
    assert any(isinstance(m, nn.Mish) for m in net.modules())
    assert not any(isinstance(m, nn.LeakyReLU) for m in net.modules())


def test_pruning_keeps_heads_and_reloads_from_layer_shapes():
    net = build_yolo_v4_tiny("cspdarknet_tiny", 3).eval()
    x = torch.randn(1, 3, 64, 64)
    before = sum(p.numel() for p in net.parameters())
    prune_model(net, x, PruneConfig(threshold=None, ratio=0.5), ignored_layers=[net.big_head, net.mid_head])
    assert sum(p.numel() for p in net.parameters()) < before / 2
    assert [o.shape for o in net(x)] == [(1, 24, 2, 2), (1, 24, 4, 4)]
    rebuilt = build_yolo_v4_tiny("cspdarknet_tiny", 3)
    apply_layer_shapes(rebuilt, layer_shapes(net))
    rebuilt.load_state_dict(net.state_dict())
    assert torch.allclose(rebuilt.eval()(x)[1], net(x)[1])


def test_input_size_must_be_a_multiple_of_32():
    check_input_size(416, 256)
    with pytest.raises(SpecError, match="image_width: 100 must be a multiple of 32"):
        check_input_size(100, 256)
