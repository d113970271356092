"""DetectNet_v2 network: a backbone cut at output stride 16 and two 1x1 conv heads (TAO's layout).

forward() returns raw outputs, which are also the exported ONNX outputs:
  coverage logits [N, C, H/16, W/16] (sigmoid is applied by decode_outputs / the post-processor,
  so training can use the numerically stable BCE-with-logits) and
  bbox [N, 4C, H/16, W/16] in objective_set units (see targets.py).
"""
from __future__ import annotations

import math
import os

import torch
from torch import nn

from ....vision.backbones import Backbone, build_backbone
from ....errors import ModelError, SpecError

COVERAGE_PRIOR = 0.01  # initial coverage probability everywhere: stable early training


class DetectNetV2(nn.Module):
    def __init__(self, backbone: Backbone, num_classes: int):
        super().__init__()
        stride = backbone.strides[-1]
        if stride is None:
            raise ModelError(f"backbone {backbone.name!r} ends in a pooled vector; DetectNet_v2 needs a feature map")
        self.backbone = backbone
        self.num_classes = num_classes
        self.stride = int(stride)
        self.coverage = nn.Conv2d(backbone.num_features, num_classes, kernel_size=1)
        self.bbox = nn.Conv2d(backbone.num_features, 4 * num_classes, kernel_size=1)
        nn.init.normal_(self.coverage.weight, std=0.01)
        nn.init.constant_(self.coverage.bias, math.log(COVERAGE_PRIOR / (1 - COVERAGE_PRIOR)))
        nn.init.normal_(self.bbox.weight, std=0.01)
        # Start every cell at a 35-pixel box around its anchor, so GIoU starts from real boxes.
        nn.init.constant_(self.bbox.bias, 0.5)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone.forward_features(images)
        return self.coverage(features), self.bbox(features)

    @staticmethod
    def decode_outputs(outputs: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(coverage logits, bbox) -> (coverage probabilities, bbox)."""
        cov_logits, bbox = outputs
        return torch.sigmoid(cov_logits), bbox

    def check_input_size(self, width: int, height: int) -> None:
        check_input_size(width, height, self.stride)


def check_input_size(width: int, height: int, stride: int = 16) -> None:
    """The input must tile exactly into output cells, as TAO requires."""
    bad = [f"data.image_{name}: {value}" for name, value in (("width", width), ("height", height))
           if value % stride or value <= 0]
    if bad:
        raise SpecError(f"{', '.join(bad)} must be a positive multiple of {stride} (the DetectNet_v2 output "
                        f"stride), e.g. {max(stride, round(width / stride) * stride)}x"
                        f"{max(stride, round(height / stride) * stride)}")


def build_detectnet_v2(backbone: str, num_classes: int, pretrained: bool | str | os.PathLike = True,
                       freeze_blocks: list[int] = (), freeze_bn: bool = False) -> DetectNetV2:
    """A DetectNet_v2 on zoo backbone `backbone` (ImageNet weights, a .pth path, or random)."""
    net = DetectNetV2(build_backbone(backbone, pretrained=pretrained, out_stride=16), num_classes)
    net.backbone.freeze(list(freeze_blocks), freeze_bn)
    return net
