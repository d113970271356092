"""Spec sections every text task shares: the encoder (`model`), text training defaults, evaluate and inference
keys, INT8 export defaults, and TextSpec, the order of sections in every text task's spec."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from ..spec import ExportConfig, SpecModel, TrainConfig, with_defaults
from .prune import TextPruneConfig

DEFAULT_BACKBONE = "minilm-l6"

# data.length_bucketing of every text task (TextData's `bucketing`)
LengthBucketing = Annotated[bool, Field(description="draw each training batch from sentences of similar length "
                                                    "(less padding, faster)")]


class TextModelConfig(SpecModel):
    """The `model` keys of every text task."""

    backbone: str = Field(DEFAULT_BACKBONE, description="zoo name (tkit model list), a local Hugging Face model "
                                                        "folder, or a hub name (needs a network)")
    pretrained: bool | str = Field(
        True, description="true = the backbone's pretrained weights; false = random weights of its architecture; "
                          "or a .ckpt of this task to continue from (labels both share keep their head rows)")
    pruned: str | None = Field(None, description="retrain a pruned model: path to pruned.ckpt from `prune`")
    max_length: int = Field(128, ge=8, le=512, description="tokens per input, [CLS] and [SEP] included; longer "
                                                          "inputs are truncated")
    lowercase: bool = Field(False, description="lowercase text before tokenizing (uncased tokenizers such as "
                                               "MiniLM's do it themselves)")
    freeze_embeddings: bool = Field(
        True, description="keep pretrained word embeddings fixed (a few hundred sentences cannot improve them, and each "
                          "step on a CPU is faster); random weights are always trained")
    config_overrides: dict[str, Any] = Field(
        default_factory=dict, description="transformers config values to change, e.g. {hidden_dropout_prob: 0.2}; "
                                          "with pretrained=false also sizes such as {num_hidden_layers: 2}")


TextTrainConfig = with_defaults(
    TrainConfig, "TextTrainConfig", __name__,
    "Training defaults that fine-tune a pretrained encoder on a few hundred sentences: AdamW, a linear schedule "
    "with 10% warm-up, the encoder at a tenth of the head's learning rate.",
    descriptions={
        "batch_size": "sentences per step on each device",
        "learning_rate": "peak learning rate of the head (the encoder's is this x backbone_lr_scale)",
        "num_workers": "DataLoader worker processes per device (text is tokenized up front: 0 is fastest)",
        "momentum": "momentum of optimizer=sgd (adam and adamw do not use it)",
        "backbone_lr_scale": "the pretrained encoder's learning rate is learning_rate x this (the new head's is "
                             "learning_rate)",
        "seed": "random seed for the new head's weights (all weights with model.pretrained=false), the data order "
                "and the val_split hold-out",
        "early_stopping_metric": "metric early stopping watches, e.g. val/loss (empty = the task's monitor: "
                                 "val/f1_macro for text_classification, val/f1 for token_classification)",
    },
    epochs=8, batch_size=16, learning_rate=1e-3, optimizer="adamw", weight_decay=0.01, backbone_lr_scale=0.1,
    lr_scheduler="linear", warmup_fraction=0.1, grad_clip_norm=1.0, num_workers=0,
)

TextExportConfig = with_defaults(
    ExportConfig, "TextExportConfig", __name__,
    "Export defaults of a text model: INT8 means dynamic quantisation (int8 weights, no calibration).",
    descriptions={"int8": "also write an INT8 model (how: int8_target)",
                  "calibration_images": "training sentences used for INT8 calibration (cpu / tensorrt targets only)"},
    int8_target="dynamic",
)



class TextEvaluationConfig(SpecModel):
    """The `evaluation` keys of every text task."""

    batch_size: int = Field(64, gt=0, description="sentences per batch")


class TextInferenceConfig(SpecModel):
    """The `inference` keys every text task reads its inputs with (text.data.read_inference_inputs)."""

    file: str | None = Field(None, description="inputs: a text file (one sentence per line) or .jsonl (a text field "
                                               "per line)")
    format: Literal["auto", "text", "jsonl"] = Field("auto", description="auto (.jsonl/.json/.ndjson: jsonl, else "
                                                                         "text) | text | jsonl")
    text_field: str = Field("text", min_length=1, description="jsonl: the field holding the text")
    batch_size: int = Field(64, gt=0, description="sentences per batch")


class TextSpec(SpecModel):
    """The sections of a text task's spec, in the order default_spec prints them. A task narrows `data`, `model`,
    `inference` and `dataset_convert` to its own classes (a redeclared field keeps its place)."""

    data: SpecModel = Field(description="dataset")
    model: TextModelConfig = Field(default_factory=TextModelConfig, description="network")
    train: TextTrainConfig = Field(default_factory=TextTrainConfig, description="training")
    evaluation: TextEvaluationConfig = Field(default_factory=TextEvaluationConfig, description="evaluate verb")
    inference: TextInferenceConfig = Field(default_factory=TextInferenceConfig, description="inference verb")
    prune: TextPruneConfig = Field(default_factory=TextPruneConfig, description="prune verb")
    export: TextExportConfig = Field(default_factory=TextExportConfig, description="export verb")
    dataset_convert: SpecModel = Field(description="dataset_convert verb")
