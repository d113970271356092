
import pytest
import torch
import torchvision
from torch import nn

from transferkit.vision.backbones import Backbone, build_backbone
from transferkit.errors import ModelError
from transferkit.zoo import import_weights

x64 = torch.randn(2, 3, 64, 64)


@pytest.mark.parametrize(
    "name, channels",
    [
        ("resnet18", [64, 64, 128, 256, 512]),
        ("mobilenet_v2", [16, 24, 32, 96, 1280]),
        ("efficientnet_lite0", [16, 24, 40, 112, 1280]),
    ],
)
def test_stages_report_channels_and_cumulative_strides(name, channels):
    backbone = build_backbone(name, pretrained=False).eval()  # eval: EfficientNet-Lite drops paths at random
    assert backbone.channels == channels and backbone.num_features == channels[-1]
    assert backbone.strides == [2, 4, 8, 16, 32]
    assert backbone.pretrained_info is None
    maps = backbone(x64)
    assert [m.shape[1] for m in maps] == channels
    assert [64 // m.shape[-1] for m in maps] == backbone.strides
    assert torch.equal(backbone.forward_features(x64), maps[-1])


def test_out_stride_drops_the_deeper_stages():
    backbone = build_backbone("mobilenet_v2", pretrained=False, out_stride=16)
    assert backbone.strides == [2, 4, 8, 16] and backbone.num_features == 96
    assert backbone.forward_features(x64).shape == (2, 96, 4, 4)
    with pytest.raises(ModelError, match="out_stride 12 is not available"):
        build_backbone("mobilenet_v2", pretrained=False, out_stride=12)


def _bn_layers(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def test_freeze_blocks_stops_gradients_in_those_stages_only():
    backbone = build_backbone("resnet18", pretrained=False).freeze([0, 1])
    for index, stage in enumerate(backbone.stages):
        assert all(p.requires_grad == (index > 1) for p in stage.parameters())
    backbone.forward_features(x64).sum().backward()
    assert backbone.stages[0][0].weight.grad is None
    assert backbone.stages[4][0][0].conv1.weight.grad is not None  # stage 4 = (layer4,)


def test_freeze_bn_keeps_statistics_fixed_through_train_calls():
    backbone = build_backbone("resnet18", pretrained=False).freeze([], freeze_bn=True)
    backbone.train()
    assert backbone.training and all(not bn.training for bn in _bn_layers(backbone))
    before = [bn.running_mean.clone() for bn in _bn_layers(backbone)]
    backbone(x64 + 3.0)
    assert all(torch.equal(b, bn.running_mean) for b, bn in zip(before, _bn_layers(backbone)))
    assert all(bn.weight.requires_grad for bn in _bn_layers(backbone))  # affine weights still train


def test_without_freeze_bn_statistics_follow_the_data():
    backbone = build_backbone("resnet18", pretrained=False).train()
    before = _bn_layers(backbone)[0].running_mean.clone()
    backbone(x64 + 3.0)
    assert not torch.equal(before, _bn_layers(backbone)[0].running_mean)


def test_freezing_a_stage_that_does_not_exist_is_an_error():
    with pytest.raises(ModelError, match="stages 0..4"):
        build_backbone("resnet18", pretrained=False).freeze([7])


def test_pretrained_may_be_a_state_dict_file(tmp_path):
    torch.manual_seed(1)
    net = torchvision.models.mobilenet_v2()
    torch.save(net.state_dict(), tmp_path / "mine.pth")
    backbone = build_backbone("mobilenet_v2", pretrained=tmp_path / "mine.pth")
    assert torch.equal(backbone.stages[0][0][0].weight, net.features[0][0].weight)
    info = backbone.pretrained_info
    assert info.source == "file" and info.tensors_loaded == len(net.state_dict())
    assert torch.equal(info.classifier["weight"], net.classifier[1].weight)


def test_a_state_dict_of_another_architecture_is_refused_with_the_mismatches(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(ModelError, match=r"does not fit backbone 'mobilenet_v2': \d+ backbone tensors missing"):
        build_backbone("mobilenet_v2", pretrained=tmp_path / "resnet.pth")


def test_a_fine_tuned_file_with_another_classifier_still_loads_its_backbone(tmp_path):
    net = torchvision.models.resnet18(num_classes=3)
    torch.save(net.state_dict(), tmp_path / "three_classes.pth")
    info = build_backbone("resnet18", pretrained=tmp_path / "three_classes.pth").pretrained_info
    assert info.classifier is None and info.tensors_loaded == len(net.state_dict()) - 2


def test_timm_backbone_takes_stages_from_feature_info():
    import timm

    backbone = build_backbone("timm:resnet10t", pretrained=False)
    reference = timm.create_model("resnet10t", features_only=True)
    assert backbone.channels == reference.feature_info.channels() == [64, 64, 128, 256, 512]
    assert backbone.strides == reference.feature_info.reduction()
    assert [m.shape[1] for m in backbone(x64)] == backbone.channels
    assert isinstance(backbone, Backbone) and len(backbone.stages) == 5


def test_timm_model_with_its_own_feature_class_is_cut_into_stages_too():
    backbone = build_backbone("timm:mobilenetv3_small_050", pretrained=False)
    assert len(backbone.stages) == len(backbone.channels) == 5
    assert [64 // m.shape[-1] for m in backbone(x64)] == backbone.strides == [2, 4, 8, 16, 32]


def test_timm_pretrained_offline_fails_fast_with_the_import_command():
    with pytest.raises(ModelError) as err:  # offline: refused at once, no hub retries (HF_HUB_OFFLINE=1)
        build_backbone("timm:resnet10t", pretrained=True)
    assert "tkit model import timm:resnet10t /path/to/model.safetensors" in str(err.value)
    assert "https://huggingface.co/timm/resnet10t.c3_in1k" in str(err.value)


def test_timm_weights_imported_by_hand_are_loaded(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(2)
    full = timm.create_model("resnet10t")
    save_file(full.state_dict(), str(tmp_path / "model.safetensors"))
    import_weights("timm:resnet10t", tmp_path / "model.safetensors")
    backbone = build_backbone("timm:resnet10t", pretrained=True)
    first_conv = backbone.stages[0][0][0]
    assert torch.equal(first_conv.weight, full.conv1[0].weight)
    info = backbone.pretrained_info
    assert info.source == "imported" and info.classifier["weight"].shape == (1000, 512)
