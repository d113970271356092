"""DetectNet_v2 network: output layout, input-size check, gradients, and a tiny overfit."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from transferkit.errors import SpecError
from transferkit.tasks.detection.detectnet_v2.loss import detectnet_loss
from transferkit.tasks.detection.detectnet_v2.model import DetectNetV2, build_detectnet_v2, check_input_size
from transferkit.tasks.detection.detectnet_v2.postprocess import detections_from_outputs
from transferkit.tasks.detection.detectnet_v2.spec import ClusterSettings, LossConfig
from transferkit.tasks.detection.detectnet_v2.targets import rasterise


@pytest.fixture(scope="module")
def net() -> DetectNetV2:
    torch.manual_seed(0)
    return build_detectnet_v2("mobilenet_v2", num_classes=2, pretrained=False)


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "resnet18"])
def test_outputs_are_coverage_logits_and_4c_bbox_maps_at_stride_16(backbone):
    net = build_detectnet_v2(backbone, num_classes=3, pretrained=False).eval()
    with torch.no_grad():
        cov, bbox = net(torch.rand(2, 3, 64, 96))
    assert net.stride == 16
    assert cov.shape == (2, 3, 4, 6) and bbox.shape == (2, 12, 4, 6)
    prob, _ = net.decode_outputs((cov, bbox))
    assert prob.mean().item() == pytest.approx(0.01, abs=0.01)  # coverage prior


def test_input_size_not_a_multiple_of_16_names_the_spec_keys(net):
    net.check_input_size(96, 64)
    with pytest.raises(SpecError, match=r"data\.image_width: 100 must be a positive multiple of 16"):
        net.check_input_size(100, 64)
    with pytest.raises(SpecError, match=r"data\.image_width: 90, data\.image_height: 70"):
        check_input_size(90, 70)


def test_loss_gradients_reach_the_backbone(net):
    net.train()
    images = torch.rand(2, 3, 64, 64)
    t = rasterise(np.array([[10, 12, 40, 50]]), np.array([1]), 2, 4, 4, 16)
    targets = {k: torch.stack([v, v]) for k, v in t.items()}
    net.zero_grad()
    detectnet_loss(net(images), targets, LossConfig(bbox_loss="l1+giou"))["total"].backward()
    first_conv = next(p for p in net.backbone.parameters() if p.ndim == 4)
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0
    assert net.coverage.weight.grad.abs().sum() > 0 and net.bbox.weight.grad.abs().sum() > 0


def test_a_few_steps_on_one_image_reduce_the_loss():
    torch.manual_seed(0)
    net = build_detectnet_v2("mobilenet_v2", num_classes=1, pretrained=False).train()
    image = torch.full((1, 3, 64, 64), -1.0)
    image[:, :, 16:48, 8:40] = 1.0  # one bright square
    images = image.repeat(2, 1, 1, 1)
    t = rasterise(np.array([[8, 16, 40, 48]]), np.array([0]), 1, 4, 4, 16)
    targets = {k: torch.stack([v, v]) for k, v in t.items()}
    cfg = LossConfig(coverage_foreground_weight=0.5)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(60):
        loss = detectnet_loss(net(images), targets, cfg)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses
    # Decoded with batch statistics: after only 60 steps of a fast-changing random network the
    # BatchNorm running averages still lag behind (eval mode is exercised by the end-to-end tests).
    with torch.no_grad():
        det = detections_from_outputs(*net(images), net.stride, ClusterSettings())[0]
    assert len(det.boxes) >= 1
