"""The YOLOv4-tiny spec (TAO's keys where they exist). data / evaluation / inference are the shared
detection sections (tasks/detection/base.py)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ....spec import FLOAT32_MAX, BackboneModelConfig, ExportConfig, PruneConfig, SpecModel
from ....vision.box_augment import YoloAugmentationConfig
from ....vision.spec import VisionTrainConfig
from ..base import DetectionDataConfig, EvaluationConfig, InferenceConfig

# Darknet's yolov4-tiny COCO anchors at 416 px; `tkit yolo_v4_tiny kmeans` fits anchors to your labels.
BIG_ANCHORS = [[81.0, 82.0], [135.0, 169.0], [344.0, 319.0]]
MID_ANCHORS = [[10.0, 14.0], [23.0, 27.0], [37.0, 58.0]]


class YoloDataConfig(DetectionDataConfig):
    image_width: int = Field(416, ge=32, le=4096, description="network input width (multiple of 32)")
    image_height: int = Field(416, ge=32, le=4096, description="network input height (multiple of 32)")
    augmentation: YoloAugmentationConfig = Field(default_factory=YoloAugmentationConfig,
                                                 description="training augmentation")


def _anchors(value: list[list[float]], key: str) -> list[list[float]]:
    if len(value) != 3 or any(len(a) != 2 or a[0] <= 0 or a[1] <= 0 for a in value):
        raise ValueError(f"{key} needs 3 anchors as [[w, h], [w, h], [w, h]] with positive sizes in input pixels")
    return value


class YoloModelConfig(BackboneModelConfig):
    backbone: str = Field("cspdarknet_tiny", description="cspdarknet_tiny (trains from scratch) or a zoo model "
                                                         "(`tkit model list`, ImageNet weights)")
    pretrained: bool | str = Field(
        True, description="true = the zoo's ImageNet weights (none exist for cspdarknet_tiny), false = random, "
                          "or a .pth/.ckpt file")
    activation: Literal["leaky_relu", "mish"] = Field("leaky_relu", description="cspdarknet_tiny and neck activation")
    big_anchor_shape: list[list[float]] = Field(
        default_factory=lambda: [list(a) for a in BIG_ANCHORS], description="stride-32 anchors [[w, h] x3], input px")
    mid_anchor_shape: list[list[float]] = Field(
        default_factory=lambda: [list(a) for a in MID_ANCHORS], description="stride-16 anchors [[w, h] x3], input px")
    grid_xy_extend: float = Field(0.05, ge=0, le=1, description="grid sensitivity: centres may reach past their cell")

    @field_validator("big_anchor_shape")
    @classmethod
    def _big(cls, v):
        return _anchors(v, "big_anchor_shape")

    @field_validator("mid_anchor_shape")
    @classmethod
    def _mid(cls, v):
        return _anchors(v, "mid_anchor_shape")


class YoloLossConfig(SpecModel):
    """The `loss` section, read by loss.yolo_loss (the decoder's grid_xy_extend comes from `model`)."""

    box_matching_iou: float = Field(0.25, gt=0, le=1, description="anchors above this IoU with a box are positives too")
    matching_neutral_box_iou: float = Field(
        0.5, gt=0, le=1, description="predictions above this IoU with a box are not objectness negatives")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="class targets onehot * (1 - ls) + ls / 2")
    # Weights of the summed, per-image terms. The ratio 5:1:1 is YOLOX's for the same sum reductions:
    # 1 - CIoU is bounded by 2 per positive and its gradient with respect to the logits is several times
    # smaller than a BCE's (~0.1 per unit tx for an anchor-sized box), while the objectness sum also runs
    # over thousands of negative cells per image; a higher box weight keeps localisation from being
    # drowned out. Class and objectness BCE are on the same per-element scale, so they share weight 1.
    box_weight: float = Field(5.0, gt=0, description="CIoU box loss weight")
    obj_weight: float = Field(1.0, gt=0, description="objectness loss weight")
    cls_weight: float = Field(1.0, gt=0, description="class loss weight")


class NmsConfig(SpecModel):
    confidence_threshold: float = Field(0.001, ge=0, lt=1, description="drop boxes scoring this or less")
    iou_threshold: float = Field(0.5, gt=0, le=1, description="same-class boxes overlapping more are suppressed")
    top_k: int = Field(200, gt=0, description="keep at most this many boxes per class and per image")


class KmeansConfig(SpecModel):
    num_clusters: int = Field(6, gt=0, description="anchors to fit (6 = 3 big + 3 mid)")
    max_iter: int = Field(300, gt=0, description="k-means iterations per restart")
    restarts: int = Field(5, gt=0, description="k-means restarts; the best mean IoU wins")
    output: str | None = Field(None, description="write the anchors here (default RESULTS/anchors.yaml)")


class YoloExportConfig(ExportConfig):
    include_nms: bool = Field(True, description="decode + NMS inside the ONNX graph (false = raw heads, e.g. for a "
                                                "TensorRT NMS plugin)")


class YoloTrainConfig(VisionTrainConfig):
    optimizer: Literal["sgd", "adam", "adamw"] = Field("adamw", description="sgd | adam | adamw")
    learning_rate: float = Field(2e-3, gt=0, le=FLOAT32_MAX, description="peak learning rate")
    warmup_epochs: int = Field(1, ge=0, description="linear learning-rate warm-up epochs")


class YoloSpec(SpecModel):
    data: YoloDataConfig = Field(default_factory=YoloDataConfig, description="dataset")
    model: YoloModelConfig = Field(default_factory=YoloModelConfig, description="network")
    loss: YoloLossConfig = Field(default_factory=YoloLossConfig, description="loss")
    nms: NmsConfig = Field(default_factory=NmsConfig, description="non-maximum suppression (val, evaluate, "
                                                                  "inference, export)")
    kmeans: KmeansConfig = Field(default_factory=KmeansConfig, description="kmeans verb (anchor fitting)")
    train: YoloTrainConfig = Field(default_factory=YoloTrainConfig, description="training")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig, description="evaluate verb and val mAP")
    inference: InferenceConfig = Field(default_factory=InferenceConfig, description="inference verb")
    prune: PruneConfig = Field(default_factory=PruneConfig, description="prune verb")
    export: YoloExportConfig = Field(default_factory=YoloExportConfig, description="export verb")
