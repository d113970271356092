"""BatchNorm folding for eager inference: same predictions, fewer layers, the original left alone."""
import pytest
import torch
import torchvision
from torch import nn

from transferkit.optimize.fuse import fold_batchnorm
from transferkit.tasks import get_task
from transferkit.vision.backbones import build_backbone


def with_random_bn_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running stats and affine parameters, so folding has something to get wrong."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


def count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.allclose(a, b, rtol=1e-3, atol=1e-4 * max(1.0, float(a.abs().max()))))


@pytest.mark.export
def test_mobilenet_v2_folds_every_batchnorm_and_predicts_the_same():
    torch.manual_seed(0)
    net = with_random_bn_statistics(torchvision.models.mobilenet_v2(weights=None, num_classes=10))
    x = torch.randn(2, 3, 64, 64)
    folded, count = fold_batchnorm(net, x)
    assert count == count_bn(net) == 52 and count_bn(folded) == 0
    with torch.inference_mode():
        assert close(net(x), folded(x))
        assert close(net(x[:1]), folded(x[:1]))  # batch 1 too, not only the batch it was found on


@pytest.mark.export
def test_efficientnet_lite_batchnorms_called_as_attributes_are_folded():
    torch.manual_seed(0)
    net = with_random_bn_statistics(build_backbone("efficientnet_lite0", pretrained=False))
    x = torch.randn(1, 3, 64, 64)
    folded, count = fold_batchnorm(net, x)
    assert count == count_bn(net) and count_bn(folded) == 0
    with torch.inference_mode():
        assert close(net.forward_features(x), folded.forward_features(x))


def test_original_model_is_not_modified_and_keeps_its_mode():
    net = with_random_bn_statistics(torchvision.models.mobilenet_v2(weights=None, num_classes=3)).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded, _ = fold_batchnorm(net, torch.randn(1, 3, 32, 32))
    assert net.training and count_bn(net) == 52 and folded is not net
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


class ConvOutputReadTwice(nn.Module):
    """conv -> bn, but the conv's raw output is also added back: folding would change that sum."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_a_conv_whose_output_is_read_elsewhere_is_left_unfolded():
    net = with_random_bn_statistics(ConvOutputReadTwice())
    x = torch.randn(1, 3, 8, 8)
    folded, count = fold_batchnorm(net, x)
    assert count == 0 and folded is net
    with torch.inference_mode():
        assert close(net(x), folded(x))


def test_a_model_without_batchnorm_comes_back_as_is():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    assert fold_batchnorm(net, torch.randn(1, 3, 8, 8)) == (net, 0)


@pytest.mark.export
def test_vision_eager_runner_runs_a_folded_copy_with_the_same_outputs():
    torch.manual_seed(0)
    net = with_random_bn_statistics(torchvision.models.mobilenet_v2(weights=None, num_classes=4))
    run = get_task("classification").eager_runner(net, "cpu")
    x = torch.randn(3, 3, 48, 48)
    with torch.inference_mode():
        expected = net(x)
        assert close(expected, run(x)) and close(expected[:1], run(x[:1]))
    assert count_bn(net) == 52  # the predictor's own network (what export writes) keeps its BatchNorms
