"""The text_classification spec: every key `tkit text_classification default_spec` prints."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ...spec import SpecModel
from ...text.spec import LengthBucketing, TextInferenceConfig, TextModelConfig, TextSpec

Probability = Annotated[float, Field(gt=0, lt=1)]


class TCDataConfig(SpecModel):
    train_file: str | None = Field(None, description="training sentences: .tsv (sentence<TAB>label), .csv with a "
                                                     "header, or .jsonl ({\"text\": ..., \"label\": ...})")
    val_file: str | None = Field(None, description="validation sentences, same formats; empty = hold out val_split "
                                                   "of train_file")
    labels_file: str | None = Field(None, description="label names, one per line: integer labels in the files index "
                                                      "it (TAO's form), and it fixes the label order")
    labels: list[str] | None = Field(None, description="label names in output order (empty = labels_file, else the "
                                                       "sorted names found in train_file)")
    format: Literal["auto", "tsv", "csv", "jsonl"] = Field(
        "auto", description="auto (by extension: .tsv/.txt tsv, .csv csv, .jsonl/.json/.ndjson jsonl) | tsv | csv | "
                            "jsonl")
    text_column: str | None = Field(None, description="CSV column / JSON field holding the text (empty = text, "
                                                      "else sentence)")
    label_column: str | None = Field(None, description="CSV column / JSON field holding the label(s) (empty = label, "
                                                       "else labels)")
    label_separator: str = Field(",", min_length=1, description="multi-label: what separates several labels in "
                                                                "one TSV/CSV label field")
    val_split: float = Field(0.2, gt=0, lt=1, description="fraction of train_file held out (stratified by label) "
                                                          "when there is no val_file")
    length_bucketing: LengthBucketing = True


class TCModelConfig(TextModelConfig):
    multi_label: bool = Field(False, description="several labels per sentence (sigmoid outputs, binary "
                                                 "cross-entropy, a threshold per label)")


class TCInferenceConfig(TextInferenceConfig):
    top_k: int = Field(3, gt=0, description="single-label: scores of the k best labels written per sentence")
    threshold: Probability = Field(0.5, description="multi-label: a label is predicted when its score is at least "
                                                    "this (evaluate and validation use it too)")
    thresholds: dict[str, Probability] = Field(default_factory=dict, description="multi-label: per-label thresholds, "
                                                                                 "e.g. {refund: 0.3}; others use "
                                                                                 "threshold")


class TCConvertConfig(SpecModel):
    output_format: Literal["tsv", "jsonl", "tao"] = Field(
        "tsv", description="tsv: sentence<TAB>label names | jsonl: {text, label(s)} | tao: integer labels + labels.txt")
    output_dir: str | None = Field(None, description="where the converted files go (empty = RESULTS/converted)")


class TextClassificationSpec(TextSpec):
    data: TCDataConfig = Field(default_factory=TCDataConfig, description="dataset")
    model: TCModelConfig = Field(default_factory=TCModelConfig, description="network")
    inference: TCInferenceConfig = Field(default_factory=TCInferenceConfig, description="inference verb")
    dataset_convert: TCConvertConfig = Field(default_factory=TCConvertConfig, description="dataset_convert verb")
