"""The keypoints spec: every key `tkit keypoints default_spec` prints.

The network sees one crop per object: the object's box, padded by `data.box_padding` and widened
or heightened to the input's aspect (`data.image_width / data.image_height`), resampled to the
input size. Heatmaps come out at `1 / heatmap_stride` of the input.
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, field_validator

from ...spec import FLOAT32_MAX, BackboneModelConfig, ExportConfig, MinMax, PruneConfig, SpecModel
from ...vision.spec import CacheMode, VisionTrainConfig, cache_dir_field, cache_field

INPUT_STRIDE = 32  # crops are multiples of the backbones' coarsest stride, so the head's maps tile exactly
UNIFORM_SIGMA = 0.05  # OKS sigma of every keypoint when the spec gives none and the names are not COCO's 17

Sigma = Annotated[float, Field(gt=0, le=10)]
Width = Annotated[int, Field(gt=0, le=4096)]
ScaleFactor = Annotated[float, Field(gt=0, le=8)]


class KpAugmentationConfig(SpecModel):
    scale: MinMax[ScaleFactor] = Field((0.75, 1.25), description="random zoom [min, max] of the padded box")
    rotation: float = Field(30.0, ge=0, le=180, description="random rotation up to +-this many degrees")
    horizontal_flip: float = Field(0.5, ge=0, le=1, description="probability of a left-right flip (left/right "
                                                                "keypoints swap through the flip pairs)")
    half_body: float = Field(0.0, ge=0, le=1, description="probability of cropping only the upper or lower body")
    color_jitter: float = Field(0.2, ge=0, le=1, description="brightness/contrast jitter strength")


class KpDataConfig(SpecModel):
    train_images: str | None = Field(None, description="folder the training JSON's file_name entries are relative to")
    train_labels: str | None = Field(None, description="COCO keypoints JSON of the training objects")
    val_images: str | None = Field(None, description="folder of validation images")
    val_labels: str | None = Field(None, description="COCO keypoints JSON of the validation objects")
    category: str | None = Field(
        None, description="the category whose keypoints are learned (empty = the only category with keypoints)")
    keypoint_sigmas: Union[Sigma, list[Sigma], None] = Field(
        None, description="OKS sigma per keypoint (a list, in keypoint order) or one value for all; empty = "
                          f"COCO's for the 17 COCO person joints, else {UNIFORM_SIGMA}")
    flip_pairs: list[tuple[str, str]] | None = Field(
        None, description="keypoint name pairs that swap under a horizontal flip; empty = from the names "
                          "(left_*/right_*, l_*/r_*, *_left/*_right)")
    image_width: int = Field(192, ge=INPUT_STRIDE, le=4096, description="crop width fed to the network "
                                                                         "(multiple of 32)")
    image_height: int = Field(256, ge=INPUT_STRIDE, le=4096, description="crop height (multiple of 32)")
    box_padding: float = Field(1.25, ge=1, le=4, description="each box is enlarged by this factor before cropping")
    heatmap_sigma: float = Field(2.0, gt=0, le=32, description="Gaussian sigma of the target heatmaps, heatmap pixels")
    max_image_pixels: int = Field(100_000_000, gt=0, description="refuse images larger than this many pixels")
    cache: CacheMode = cache_field()
    cache_dir: str | None = cache_dir_field()
    augmentation: KpAugmentationConfig = Field(
        default_factory=KpAugmentationConfig, description="training augmentation (moves keypoints with the crop)")

    @field_validator("image_width", "image_height")
    @classmethod
    def _multiple_of_stride(cls, value: int) -> int:
        if value % INPUT_STRIDE:
            low = value // INPUT_STRIDE * INPUT_STRIDE
            raise ValueError(f"must be a multiple of {INPUT_STRIDE}, e.g. {max(low, INPUT_STRIDE)} or "
                             f"{low + INPUT_STRIDE}")
        return value


class KpModelConfig(BackboneModelConfig):
    backbone: str = Field("mobilenet_v2", description="zoo model name (`tkit model list`) or timm:<name>")
    deconv_channels: list[Width] = Field(
        [128, 128, 128], min_length=1, max_length=5,
        description="width of each 2x upsampling stage after the backbone's deepest map (3 stages: heatmaps "
                    "at stride 4)")
    upsample: Literal["deconv", "resize"] = Field(
        "deconv", description="each upsampling stage: deconv (4x4 stride-2 transposed convolution, SimpleBaseline's) "
                              "| resize (2x nearest resize + 3x3 convolution: every layer quantises to INT8)")


class KpTrainConfig(VisionTrainConfig):
    """The shared training keys with defaults suited to a new heatmap head on a pretrained backbone."""

    optimizer: Literal["sgd", "adam", "adamw"] = Field("adamw", description="sgd | adam | adamw")
    learning_rate: float = Field(1e-3, gt=0, le=FLOAT32_MAX, description="peak learning rate")
    batch_size: int = Field(32, gt=0, description="object crops per step on each device")


class KpEvaluationConfig(SpecModel):
    batch_size: int = Field(32, gt=0, description="object crops per batch")
    predictions: str | None = Field(
        None, description="score this COCO keypoint results JSON (e.g. an inference keypoints.json) instead of "
                          "a model")
    flip_test: bool = Field(False, description="average the prediction of the crop and of its mirror image")
    pck_alpha: float = Field(0.05, gt=0, le=1, description="PCK: a keypoint is correct within alpha x the box's "
                                                            "longer side")
    decode: Literal["dark", "quarter"] = Field("dark", description="sub-pixel heatmap decoding: dark | quarter")


class KpInferenceConfig(SpecModel):
    images: str | None = Field(None, description="folder of images, a single image, or a .txt list of paths")
    labels: str | None = Field(
        None, description="COCO keypoints JSON whose boxes are used (its image ids are written with the results)")
    boxes: str | None = Field(
        None, description="detections JSON: COCO results [{image_id, bbox, score}] or a transferkit "
                          "detections.json; without labels/boxes/detector each whole image is one box")
    detector: str | None = Field(
        None, description="a transferkit detector (best.ckpt or .onnx) run first to find the boxes")
    detector_class: list[str] | None = Field(None, description="detector classes whose boxes are used (empty = all)")
    detector_overrides: list[str] = Field(
        default_factory=list, description="spec overrides for the detector's post-processing, e.g. "
                                          "[postprocess.coverage_threshold=0.01] (on top of the spec.yaml beside "
                                          "the detector file, when there is one)")
    detector_threshold: float = Field(0.3, ge=0, le=1, description="detector boxes below this score are dropped")
    batch_size: int = Field(16, gt=0, description="object crops per batch")
    flip_test: bool = Field(False, description="average the prediction of the crop and of its mirror image")
    decode: Literal["dark", "quarter"] = Field("dark", description="sub-pixel heatmap decoding: dark | quarter")
    keypoint_threshold: float = Field(0.2, ge=0, le=1, description="keypoints scored below this are not drawn")
    annotate: bool = Field(True, description="write copies of the images with boxes and skeletons drawn")


class KpExportConfig(ExportConfig):
    output: Literal["heatmaps", "keypoints"] = Field(
        "heatmaps", description="graph outputs: heatmaps | keypoints (decoded in the graph: crop pixels and scores)")


class KeypointsSpec(SpecModel):
    data: KpDataConfig = Field(default_factory=KpDataConfig, description="dataset")
    model: KpModelConfig = Field(default_factory=KpModelConfig, description="network")
    train: KpTrainConfig = Field(default_factory=KpTrainConfig, description="training")
    evaluation: KpEvaluationConfig = Field(default_factory=KpEvaluationConfig, description="evaluate verb and val AP")
    inference: KpInferenceConfig = Field(default_factory=KpInferenceConfig, description="inference verb")
    prune: PruneConfig = Field(default_factory=PruneConfig, description="prune verb")
    export: KpExportConfig = Field(default_factory=KpExportConfig, description="export verb")
