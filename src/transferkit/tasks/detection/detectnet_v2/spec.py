"""The DetectNet_v2 spec (TAO's keys where they exist). The data, evaluation and inference sections are
shared with every detection task (tasks/detection/base.py)."""
from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import Field, NonNegativeFloat, create_model, model_serializer

from ....spec import FLOAT32_MAX, BackboneModelConfig, ExportConfig, PruneConfig, SpecModel
from ....vision.box_augment import DetectionAugmentationConfig
from ....vision.spec import VisionTrainConfig
from ..base import DetectionDataConfig, EvaluationConfig, InferenceConfig


class _Overrides(SpecModel):
    """One class's `per_class` entry: only the keys given (None = not overridden, left out when written)."""

    @model_serializer(mode="wrap")
    def _given_only(self, handler):
        return {k: v for k, v in handler(self).items() if v is not None}


def overrides_of(section: type[SpecModel]) -> type[SpecModel]:
    """The section's fields, each optional, with the same bounds: the model of one class's `per_class`
    overrides, so they are checked with the rest of the spec when it loads."""
    fields = {}
    for name, info in section.model_fields.items():
        typ = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        fields[name] = (Optional[typ], None)
    return create_model(f"{section.__name__}Overrides", __base__=_Overrides, **fields)


class DetectNetDataConfig(DetectionDataConfig):
    augmentation: DetectionAugmentationConfig = Field(default_factory=DetectionAugmentationConfig,
                                                      description="training augmentation")


class DetectNetModelConfig(BackboneModelConfig):
    bbox_scale: float = Field(35.0, gt=0, description="objective_set box scale (TAO: 35)")
    bbox_offset: float = Field(0.5, ge=0, le=1, description="objective_set cell-centre offset (TAO: 0.5)")


class TargetSettings(SpecModel):
    """How one class's boxes are drawn onto the output grid (targets.rasterise)."""

    cov_center_x: float = Field(0.5, ge=0, le=1, description="coverage ellipse centre, fraction of box width")
    cov_center_y: float = Field(0.5, ge=0, le=1, description="coverage ellipse centre, fraction of box height")
    cov_radius_x: float = Field(1.0, gt=0, description="coverage ellipse radius, fraction of the box half-width")
    cov_radius_y: float = Field(1.0, gt=0, description="coverage ellipse radius, fraction of the box half-height")
    bbox_min_radius: float = Field(1.0, ge=0, description="minimum coverage radius in output cells")
    deadzone_radius: float = Field(0.67, ge=0, description="ignored ring around the coverage region (cells)")


TargetOverrides = overrides_of(TargetSettings)


class TargetsConfig(TargetSettings):
    """The `targets` section: settings for every class, and `per_class` overrides that module.configs
    resolves into one TargetSettings per class."""

    per_class: dict[str, TargetOverrides] = Field(
        default_factory=dict, description="per-class overrides, e.g. {car: {cov_radius_x: 0.8}}")


class LossConfig(SpecModel):
    coverage_foreground_weight: float = Field(
        0.9, gt=0, lt=1, description="weight of object cells in the coverage loss (background gets 1 - this)")
    bbox_loss: Literal["l1", "giou", "l1+giou"] = Field("l1", description="box regression loss")
    coverage_weight: float = Field(1.0, ge=0, description="weight of the coverage loss")
    # objective_set units are small (pixels / bbox_scale), hence the large L1 weight.
    bbox_weight: float = Field(10.0, ge=0, description="weight of the L1 box term (bbox_loss l1, l1+giou)")
    giou_weight: float = Field(1.0, ge=0, description="weight of the 1 - GIoU box term (bbox_loss giou, l1+giou)")
    class_weights: list[NonNegativeFloat] | None = Field(
        None, description="per-class weights of both terms, one per class in class order")


class ClusterSettings(SpecModel):
    """Box clustering for one class (postprocess.cluster_boxes)."""

    clustering_algorithm: Literal["dbscan", "nms", "hybrid"] = Field("dbscan", description="dbscan | nms | hybrid")
    coverage_threshold: float = Field(0.005, ge=0, le=1, description="cells below this coverage are not candidates")
    dbscan_eps: float = Field(0.3, gt=0, lt=1, description="DBSCAN eps on 1 - IoU")
    dbscan_min_samples: float = Field(0.05, ge=0, description="summed coverage a DBSCAN core cell's neighbourhood needs")
    dbscan_confidence_threshold: float = Field(0.1, ge=0, description="drop clusters with less summed coverage")
    nms_iou_threshold: float = Field(0.5, gt=0, le=1, description="NMS IoU threshold (nms, hybrid)")
    minimum_bounding_box_height: float = Field(4.0, ge=0, description="drop boxes lower than this (pixels)")
    max_detections: int = Field(100, gt=0, description="keep at most this many boxes per image")


ClusterOverrides = overrides_of(ClusterSettings)


class PostprocessConfig(ClusterSettings):
    """The `postprocess` section: settings for every class, and `per_class` overrides that module.configs
    resolves into one ClusterSettings per class."""

    per_class: dict[str, ClusterOverrides] = Field(
        default_factory=dict, description="per-class overrides, e.g. {car: {coverage_threshold: 0.01}}")


class DatasetConvertConfig(SpecModel):
    output_format: Literal["kitti", "coco", "yolo"] = Field("coco", description="format to write")
    output_dir: str | None = Field(None, description="where the converted dataset goes")
    val_split: float = Field(0.0, ge=0, lt=100, description="percent of images written as a val split")
    split_mode: Literal["random", "sequence"] = Field("random", description="random | sequence (last N% by name)")


class DetectNetTrainConfig(VisionTrainConfig):
    # AdamW: with TAO's box-loss weight (10) SGD at the shared default learning rate diverges.
    optimizer: Literal["sgd", "adam", "adamw"] = Field("adamw", description="sgd | adam | adamw")
    learning_rate: float = Field(1e-3, gt=0, le=FLOAT32_MAX, description="peak learning rate")


class DetectNetSpec(SpecModel):
    data: DetectNetDataConfig = Field(default_factory=DetectNetDataConfig, description="dataset")
    model: DetectNetModelConfig = Field(default_factory=DetectNetModelConfig, description="network")
    targets: TargetsConfig = Field(default_factory=TargetsConfig, description="target rasteriser")
    loss: LossConfig = Field(default_factory=LossConfig, description="loss")
    postprocess: PostprocessConfig = Field(default_factory=PostprocessConfig, description="box clustering")
    train: DetectNetTrainConfig = Field(default_factory=DetectNetTrainConfig, description="training")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig, description="evaluate verb and val mAP")
    inference: InferenceConfig = Field(default_factory=InferenceConfig, description="inference verb")
    prune: PruneConfig = Field(default_factory=PruneConfig, description="prune verb")
    export: ExportConfig = Field(default_factory=ExportConfig, description="export verb")
    dataset_convert: DatasetConvertConfig = Field(default_factory=DatasetConvertConfig, description="dataset_convert verb")
