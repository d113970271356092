"""Classifier network: a zoo backbone, global average pooling, dropout, one linear layer."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ...vision.backbones import build_backbone
from ...engine.checkpoint import LoadReport, class_row_map, read_checkpoint, strip_prefix, transfer_weights


class ClassifierNet(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float = 0.2):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(backbone.num_features, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_features(images)
        if features.ndim == 4:
            features = features.mean(dim=(2, 3))
        elif features.ndim > 2:
            features = features.flatten(1)
        return self.fc(self.dropout(features))


def build_classifier(backbone: str, classes: list[str], pretrained: bool | str, dropout: float,
                     freeze_blocks: list[int] = (), freeze_bn: bool = False) -> tuple[ClassifierNet, LoadReport | None]:
    """Build the network and transfer weights into it.

    `pretrained`: True (zoo ImageNet weights), False, a backbone state-dict `.pth`, or a
    transferkit classification `.ckpt` — from which head rows are kept for classes both class
    lists share, so adding classes does not forget the old ones.
    """
    report = None
    ckpt_path = Path(pretrained) if isinstance(pretrained, str) and pretrained.endswith(".ckpt") else None
    zoo_weights = pretrained if ckpt_path is None else False
    net = ClassifierNet(build_backbone(backbone, pretrained=zoo_weights), len(classes), dropout)
    info = getattr(net.backbone, "pretrained_info", None)
    if ckpt_path is not None:
        meta, state = read_checkpoint(ckpt_path, task="classification")
        source = strip_prefix(state, "net.")
        rows = class_row_map(list(meta.classes), classes)
        report = transfer_weights(net, source, str(ckpt_path), {"fc.weight": rows, "fc.bias": rows})
    elif info is not None:
        # The backbone loaded its ImageNet weights itself; report the classifier against them.
        source = {f"backbone.{k}": v for k, v in net.backbone.state_dict().items()}
        categories = list(info.categories or [])
        classifier = info.classifier or {}
        rows = class_row_map(categories, classes) if categories else []
        source.update({f"fc.{k}": v for k, v in classifier.items()})
        row_maps = {"fc.weight": rows, "fc.bias": rows} if rows else None
        report = transfer_weights(net, source, str(info.source), row_maps)
    net.backbone.freeze(list(freeze_blocks), freeze_bn)
    return net, report
