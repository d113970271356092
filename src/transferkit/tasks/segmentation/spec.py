"""The segmentation spec: every key `tkit segmentation default_spec` prints.

`data.classes` is the class table: class names in output order (class i is source id i in the
masks), or entries `{name, ids, colour}` where `ids` lists the mask values that mean the class
(several may map to one class, TAO's data_class_config) and `colour` the [r, g, b] of RGB colour
masks. Both forms may be mixed; vision/masks.py reads masks through it.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, field_validator

from ...spec import FLOAT32_MAX, BackboneModelConfig, ExportConfig, MinMax, PruneConfig, SpecModel
from ...vision.spec import CacheMode, VisionTrainConfig, cache_dir_field, cache_field

ColourValue = Annotated[int, Field(ge=0, le=255)]
SourceId = Annotated[int, Field(ge=0)]
ScaleFactor = Annotated[float, Field(gt=0, le=8)]
NonNegative = Annotated[float, Field(ge=0)]
Width = Annotated[int, Field(gt=0, le=4096)]  # a decoder stage wider than any backbone
INPUT_STRIDE = 32  # image_width / image_height are multiples of this (the segmenters' coarsest stride)


class SegClassConfig(SpecModel):
    """One entry of the class table."""

    name: str = Field(description="class name (output order is the list order)")
    ids: list[SourceId] | None = Field(
        None, description="mask values (source ids) meaning this class; empty = the entry's position in the list")
    colour: tuple[ColourValue, ColourValue, ColourValue] | None = Field(
        None, description="[r, g, b] of this class in RGB colour masks and written palettes; empty = VOC's colour")


def _name_or_entry(value: Any) -> str:
    return "entry" if isinstance(value, dict) or isinstance(value, SegClassConfig) else "name"


def _words_or_list(value: Any) -> str:
    return "list" if isinstance(value, (list, tuple)) else "word"


# A class is a plain name or an entry; the discriminator makes a mistake report one error, not one per form.
ClassSpec = Annotated[Union[Annotated[str, Tag("name")], Annotated[SegClassConfig, Tag("entry")]],
                      Discriminator(_name_or_entry)]
ClassWeights = Annotated[Union[Annotated[Literal["auto", "none"], Tag("word")], Annotated[list[NonNegative], Tag("list")]],
                         Discriminator(_words_or_list)]


class SegAugmentationConfig(SpecModel):
    horizontal_flip: float = Field(0.5, ge=0, le=1, description="probability of a left-right flip")
    vertical_flip: float = Field(0.0, ge=0, le=1, description="probability of an up-down flip")
    scale: MinMax[ScaleFactor] = Field(
        (0.75, 1.5), description="random zoom [min, max] of the input-size image before the crop back to the "
                                 "input size ([1, 1] = off)")
    rotation: float = Field(
        0.0, ge=0, le=180, description="random rotation up to +-this many degrees (mask filled with ignore_index)")
    color_jitter: float = Field(0.2, ge=0, description="brightness/contrast/saturation jitter strength (image only)")
    hue: float = Field(0.02, ge=0, le=0.5, description="hue jitter, fraction of the hue circle (image only)")


class SegDataConfig(SpecModel):
    format: Literal["masks", "coco"] = Field(
        "masks", description="masks: image folder + mask folder (PNG class ids) | coco: image folder + COCO JSON")
    train_images: str | None = Field(None, description="folder of training images")
    train_masks: str | None = Field(
        None, description="folder of training masks named like their images (format=coco: the COCO JSON file)")
    val_images: str | None = Field(None, description="folder of validation images; empty = hold out data.val_split")
    val_masks: str | None = Field(None, description="folder of validation masks (format=coco: the COCO JSON file)")
    classes: list[ClassSpec] | None = Field(
        None, description="class names in output order, or entries {name, ids, colour}; empty (coco only) = "
                          "background + the JSON's categories")
    ignore_index: int = Field(
        255, ge=0, le=65535, description="mask value excluded from loss and metrics (unknown ids become it too)")
    image_width: int = Field(128, ge=INPUT_STRIDE, le=4096, description="network input width (multiple of 32)")
    image_height: int = Field(128, ge=INPUT_STRIDE, le=4096, description="network input height (multiple of 32)")
    val_split: float = Field(
        0.2, ge=0, lt=1, description="fraction of the training images held out as val when no val data is given")
    max_image_pixels: int = Field(100_000_000, gt=0, description="refuse images and masks larger than this many pixels")
    cache: CacheMode = cache_field()
    cache_dir: str | None = cache_dir_field()
    augmentation: SegAugmentationConfig = Field(
        default_factory=SegAugmentationConfig, description="training augmentation (moves masks with images)")

    @field_validator("image_width", "image_height")
    @classmethod
    def _multiple_of_stride(cls, value: int) -> int:
        if value % INPUT_STRIDE:
            low = value // INPUT_STRIDE * INPUT_STRIDE
            raise ValueError(f"must be a multiple of {INPUT_STRIDE}, e.g. {low} or {low + INPUT_STRIDE}")
        return value


class SegModelConfig(BackboneModelConfig):
    backbone: str = Field(
        "mobilenet_v2", description="zoo model name (`tkit model list`), timm:<name>, or vanilla_unet (from scratch)")
    decoder_channels: list[Width] | None = Field(
        None, description="width of each decoder stage, deepest first; a shorter list stops early "
                          "(empty = 16 x stride, at most 256)")
    upsampling: Literal["bilinear", "transposed"] = Field(
        "bilinear", description="decoder upsampling: bilinear | transposed (learned)")


class SegLossConfig(SpecModel):
    class_weights: ClassWeights = Field(
        "none", description="cross-entropy class weights: auto (from training pixel frequencies) | none | "
                            "one weight per class")
    dice_weight: float = Field(0.0, ge=0, description="weight of an added soft Dice loss (0 = off)")


class SegTrainConfig(VisionTrainConfig):
    """The shared training keys with defaults suited to a fresh decoder on a pretrained encoder."""

    optimizer: Literal["sgd", "adam", "adamw"] = Field("adamw", description="sgd | adam | adamw")
    learning_rate: float = Field(1e-3, gt=0, le=FLOAT32_MAX, description="peak learning rate")
    batch_size: int = Field(16, gt=0, description="images per step on each device")


class SegEvaluationConfig(SpecModel):
    batch_size: int = Field(16, gt=0, description="images per batch")
    predictions: str | None = Field(
        None, description="score the mask PNGs in this folder (class indices, named like the images) instead "
                          "of a model")


class SegInferenceConfig(SpecModel):
    images: str | None = Field(None, description="folder of images, a single image, or a .txt list of paths")
    batch_size: int = Field(8, gt=0, description="images per batch")
    overlay: bool = Field(True, description="also write the images with the predicted classes overlaid in colour")
    polygons: bool = Field(False, description="also write each class's regions as COCO polygons (predictions.json)")


class SegConvertConfig(SpecModel):
    output_format: Literal["masks", "coco"] = Field(
        "masks", description="masks: COCO -> palette PNG masks | coco: masks -> COCO JSON")
    output_dir: str | None = Field(None, description="where the converted dataset goes (empty = RESULTS/converted)")
    coco_encoding: Literal["polygons", "rle"] = Field(
        "polygons", description="masks -> COCO: polygons (regions with holes stay RLE) | rle")


class SegmentationSpec(SpecModel):
    data: SegDataConfig = Field(default_factory=SegDataConfig, description="dataset")
    model: SegModelConfig = Field(default_factory=SegModelConfig, description="network")
    loss: SegLossConfig = Field(default_factory=SegLossConfig, description="loss")
    train: SegTrainConfig = Field(default_factory=SegTrainConfig, description="training")
    evaluation: SegEvaluationConfig = Field(default_factory=SegEvaluationConfig, description="evaluate verb and val mIoU")
    inference: SegInferenceConfig = Field(default_factory=SegInferenceConfig, description="inference verb")
    prune: PruneConfig = Field(default_factory=PruneConfig, description="prune verb")
    export: ExportConfig = Field(default_factory=ExportConfig, description="export verb")
    dataset_convert: SegConvertConfig = Field(default_factory=SegConvertConfig, description="dataset_convert verb")
