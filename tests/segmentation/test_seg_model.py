"""The UNet segmenter: logits at the input size on every kind of backbone, ImageNet weights really in the
encoder, ONNX export with parity, pruning that keeps the classes and reloads from layer shapes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from transferkit.engine.checkpoint import META_KEY
from transferkit.engine.meta import ModelMeta, image_input
from transferkit.errors import ModelError, SpecError
from transferkit.io import atomic_torch_save
from transferkit.optimize import PruneConfig, apply_layer_shapes, check_parity, export_onnx, layer_shapes, prune_model
from transferkit.tasks.segmentation.model import build_segmenter, check_input_size
from transferkit.vision.backbones.weights import read_state_dict

SMALL = [32, 16, 16, 16, 16]  # narrow decoder: the tests are about structure, not capacity


@pytest.mark.parametrize("backbone",
                         ["mobilenet_v2", "efficientnet_lite0", "resnet18", "timm:resnet18", "vanilla_unet"])
@pytest.mark.parametrize("upsampling", ["bilinear", "transposed"])
def test_logits_have_the_input_size_and_one_channel_per_class(backbone, upsampling):
    net, _ = build_segmenter(backbone, 4, pretrained=False, decoder_channels=SMALL, upsampling=upsampling)
    with torch.no_grad():
        out = net.eval()(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 4, 64, 96)


def test_a_shorter_decoder_stops_early_and_upsamples_the_logits():
    net, _ = build_segmenter("mobilenet_v2", 3, pretrained=False, decoder_channels=[32, 16, 16])
    assert net.output_stride == 4 and len(net.decoder) == 3
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_auto_decoder_widths_follow_the_stride():
    net, _ = build_segmenter("mobilenet_v2", 2, pretrained=False)
    assert [stage.conv2[0].out_channels for stage in net.decoder] == [256, 128, 64, 32, 16]


@pytest.mark.parametrize("backbone, file_key", [("mobilenet_v2", "features.0.0.weight"),
                                                ("efficientnet_lite0", "_conv_stem.weight")])
def test_imagenet_weights_load_into_the_encoder(backbone, file_key):
    net, report = build_segmenter(backbone, 3, pretrained=True, decoder_channels=SMALL)
    info = net.backbone.pretrained_info
    published = read_state_dict(info.path)[file_key]
    first_conv = next(m for m in net.backbone.modules() if isinstance(m, nn.Conv2d))
    assert torch.equal(first_conv.weight, published)
    assert report is not None and all(k.startswith("backbone.") for k in report.loaded)
    assert report.reinitialised and all(k.startswith(("decoder.", "head.")) for k in report.reinitialised)


def test_vanilla_unet_has_no_pretrained_weights_and_mirrors_the_decoder_widths():
    net, report = build_segmenter("vanilla_unet", 2, pretrained=True, decoder_channels=[64, 32, 16, 8, 4])
    assert report is None
    assert net.backbone.channels == [4, 8, 16, 32, 64, 128] and net.backbone.strides == [1, 2, 4, 8, 16, 32]
    with pytest.raises(SpecError, match="vanilla_unet needs 5"):
        build_segmenter("vanilla_unet", 2, pretrained=False, decoder_channels=[16, 8])
    with pytest.raises(ModelError, match=r"\.ckpt only"):
        build_segmenter("vanilla_unet", 2, pretrained="weights.pth")


def test_too_many_decoder_stages_is_a_spec_error():
    with pytest.raises(SpecError, match="decoder_channels has 6 entries .* at most 5"):
        build_segmenter("resnet18", 2, pretrained=False, decoder_channels=[8] * 6)


def test_input_size_must_be_a_multiple_of_32():
    check_input_size(128, 96)
    with pytest.raises(SpecError, match="data.image_width: 100 must be a positive multiple of 32"):
        check_input_size(100, 96)
    net, _ = build_segmenter("vanilla_unet", 2, pretrained=False, decoder_channels=[16, 8, 8, 8, 8])
    with pytest.raises(ModelError, match="not a multiple of 32"):
        net(torch.zeros(1, 3, 48, 64))


def test_freeze_blocks_and_bn_reach_the_encoder():
    net, _ = build_segmenter("mobilenet_v2", 2, pretrained=False, decoder_channels=SMALL, freeze_blocks=[0, 1],
                             freeze_bn=True)
    assert not any(p.requires_grad for p in net.backbone.stages[1].parameters())
    assert all(p.requires_grad for p in net.backbone.stages[2].parameters())
    net.train()
    assert not any(m.training for m in net.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    assert all(m.training for m in net.decoder.modules() if isinstance(m, nn.BatchNorm2d))


def test_a_segmentation_checkpoint_keeps_the_head_rows_of_shared_classes(tmp_path):
    old, _ = build_segmenter("vanilla_unet", 3, pretrained=False, decoder_channels=[16, 8, 8, 8, 8])
    meta = ModelMeta(task="segmentation", classes=("background", "road", "car"), backbone="vanilla_unet",
                     inputs=(image_input(32, 32, [0.5] * 3, [0.25] * 3),))
    path = atomic_torch_save({"state_dict": {f"net.{k}": v for k, v in old.state_dict().items()},
                              META_KEY: meta.to_dict()}, tmp_path / "best.ckpt")
    new, report = build_segmenter("vanilla_unet", 2, pretrained=str(path), decoder_channels=[16, 8, 8, 8, 8],
                                  classes=["car", "background"])
    assert torch.equal(new.head.weight[0], old.head.weight[2]) and torch.equal(new.head.weight[1], old.head.weight[0])
    assert torch.equal(new.decoder[0].conv1[0].weight, old.decoder[0].conv1[0].weight)
    assert "head.weight" in report.partially_loaded and not report.reinitialised


@pytest.mark.export
@pytest.mark.parametrize("backbone, upsampling", [("mobilenet_v2", "bilinear"), ("vanilla_unet", "transposed")])
def test_onnx_export_matches_pytorch(tmp_path, backbone, upsampling):
    net, _ = build_segmenter(backbone, 3, pretrained=False, decoder_channels=SMALL, upsampling=upsampling)
    net.eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so parity covers them
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    spec = image_input(64, 64, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    path = export_onnx(net, tmp_path / "seg.onnx", spec)
    result = check_parity(net, path, spec.example(3, seed=7), atol=1e-4, rtol=1e-3)
    assert result["ok"], result


@pytest.mark.parametrize("backbone, upsampling", [("mobilenet_v2", "bilinear"), ("vanilla_unet", "transposed")])
def test_pruning_keeps_the_class_count_and_reloads_from_layer_shapes(backbone, upsampling):
    net, _ = build_segmenter(backbone, 3, pretrained=False, decoder_channels=SMALL, upsampling=upsampling)
    spec = image_input(64, 64, [0.5] * 3, [0.25] * 3)
    result = prune_model(net, spec.example(1), PruneConfig(threshold=None, ratio=0.5, min_num_filters=8),
                         ignored_layers=[net.head])
    assert result.params_after < result.params_before
    assert any(row.name.startswith("decoder.") for row in result.pruned_layers)
    x = spec.example(2, seed=1)
    with torch.no_grad():
        out = net(x)
    assert out.shape == (2, 3, 64, 64)
    rebuilt, _ = build_segmenter(backbone, 3, pretrained=False, decoder_channels=SMALL, upsampling=upsampling)
    apply_layer_shapes(rebuilt, layer_shapes(net))
    rebuilt.load_state_dict(net.state_dict())
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(x), out, atol=1e-5)
