"""The classification spec: every key `tkit classification default_spec` prints."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ...spec import BackboneModelConfig, ExportConfig, MinMax, PruneConfig, SpecModel
from ...vision.spec import CacheMode, VisionTrainConfig, cache_dir_field, cache_field, cache_short_side_field


AreaFraction = Annotated[float, Field(gt=0, le=1)]


class AugmentationConfig(SpecModel):
    random_resized_crop_scale: MinMax[AreaFraction] = Field(
        (0.5, 1.0), description="area range [min, max] of the random crop, as fractions of the image"
    )
    horizontal_flip: float = Field(0.5, ge=0, le=1, description="probability of a left-right flip")
    vertical_flip: float = Field(0.0, ge=0, le=1, description="probability of an up-down flip")
    color_jitter: float = Field(0.2, ge=0, description="brightness/contrast/saturation jitter strength")
    hue: float = Field(0.02, ge=0, le=0.5, description="hue jitter")


class DataConfig(SpecModel):
    train_dir: str | None = Field(None, description="training images: one sub-folder per class (ImageFolder)")
    val_dir: str | None = Field(None, description="validation images, same layout; empty = split train by val_split")
    train_csv: str | None = Field(None, description="instead of train_dir: CSV with path,label rows")
    val_csv: str | None = Field(None, description="instead of val_dir: CSV with path,label rows")
    val_split: float = Field(0.2, ge=0, lt=1, description="fraction of train held out as val when no val data is given")
    image_size: int = Field(224, ge=16, le=4096, description="square network input size in pixels")
    classes: list[str] | None = Field(None, description="class names in output order; empty = sorted folder names")
    max_image_pixels: int = Field(100_000_000, gt=0, description="refuse images larger than this many pixels")
    cache: CacheMode = cache_field()
    cache_dir: str | None = cache_dir_field()
    cache_short_side: Annotated[int, Field(ge=16)] | Literal["auto", "full"] = cache_short_side_field()
    augmentation: AugmentationConfig = Field(default_factory=AugmentationConfig, description="training augmentation")
    augment_on: Literal["workers", "device"] = Field(
        "workers", description="where training images are augmented: workers = decode and augment each image in the "
        "DataLoader workers; device = workers only decode and resize to a fixed size (uint8), the random crop, flips, "
        "colour jitter and normalisation run batched on the training device (the GPU when training there; the same "
        "code on the CPU)")


class ModelConfig(BackboneModelConfig):
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout before the classifier")


class ClassificationTrainConfig(VisionTrainConfig):
    """The shared training keys plus those only classification's loss reads."""

    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the cross-entropy loss")


class EvaluationConfig(SpecModel):
    batch_size: int = Field(32, gt=0, description="images per batch")
    top_k: int = Field(5, gt=0, description="top-k accuracy reported when there are at least k classes")


class InferenceConfig(SpecModel):
    images: str | None = Field(None, description="folder of images, a single image, or a .txt list of paths")
    batch_size: int = Field(32, gt=0, description="images per batch")
    top_k: int = Field(3, gt=0, description="labels written per image")
    annotate: bool = Field(False, description="also write copies of the images with the predicted label drawn")


class DistillConfig(SpecModel):
    teacher: str | None = Field(
        None, description="knowledge distillation while training: the teacher's best.ckpt (same classes), or auto = "
        "the model model.pruned was pruned from; empty = no distillation")
    weight: float = Field(0.5, ge=0, le=1, description="share of the distillation term in the loss (alpha); the "
                          "cross-entropy with the labels gets 1 - weight")
    temperature: float = Field(2.0, gt=0, le=100, description="softmax temperature of teacher and student logits "
                               "(on the demo set 2 beat 1 and 4)")


class ClassificationSpec(SpecModel):
    data: DataConfig = Field(default_factory=DataConfig, description="dataset")
    model: ModelConfig = Field(default_factory=ModelConfig, description="network")
    train: ClassificationTrainConfig = Field(default_factory=ClassificationTrainConfig, description="training")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig, description="evaluate verb")
    inference: InferenceConfig = Field(default_factory=InferenceConfig, description="inference verb")
    prune: PruneConfig = Field(default_factory=PruneConfig, description="prune verb")
    distill: DistillConfig = Field(default_factory=DistillConfig, description="knowledge distillation in train")
    export: ExportConfig = Field(default_factory=ExportConfig, description="export verb")
