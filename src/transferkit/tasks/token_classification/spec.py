"""The token_classification spec: every key `tkit token_classification default_spec` prints."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...spec import SpecModel
from ...text.spec import LengthBucketing, TextInferenceConfig, TextSpec
from .formats import INVALID_TAGS, SCHEMES, TAG_SCHEMES


class TokDataConfig(SpecModel):
    train_file: str | None = Field(None, description="training sentences: a CoNLL file (`word ... TAG` per line, blank "
                                                     "line between sentences), or NeMo's text file (with train_labels)")
    train_labels: str | None = Field(None, description="NeMo: the tags file paired line by line with train_file")
    val_file: str | None = Field(None, description="validation sentences, same format; empty = hold out val_split of "
                                                   "train_file")
    val_labels: str | None = Field(None, description="NeMo: the tags file paired line by line with val_file")
    format: Literal["auto", "conll", "nemo"] = Field(
        "auto", description="auto (nemo when train_labels or val_labels is set, else conll) | conll | nemo")
    tag_scheme: Literal[TAG_SCHEMES] = Field(  # type: ignore[valid-type]
        "auto", description="tags in the files: auto (iob2, bioes or iob1, whichever fits) | iob2 | iob1 | bioes | io; "
                            "read into IOB2")
    invalid_tags: Literal[INVALID_TAGS] = Field(  # type: ignore[valid-type]
        "skip", description="a sentence with an I-X that continues nothing: skip it (listed under skipped_sentences) | "
                            "repair it (I-X begins an entity; counted under repaired)")
    labels_file: str | None = Field(None, description="entity types or tags, one per line: fixes the label order; a "
                                                      "sentence with another tag is skipped and named (empty = the "
                                                      "types found in train_file)")
    val_split: float = Field(0.2, gt=0, lt=1, description="fraction of train_file held out (stratified by each "
                                                          "sentence's first entity type) when there is no val_file")
    length_bucketing: LengthBucketing = True


class TokInferenceConfig(TextInferenceConfig):
    split_punctuation: bool = Field(
        True, description="punctuation at either end of a word is a word of its own, as in CoNLL files "
                          "('Paris,' -> 'Paris' ','); false = words are whitespace-separated runs")


class TokConvertConfig(SpecModel):
    output_format: Literal["conll", "nemo"] = Field(
        "conll", description="conll: <split>.txt with `word TAG` lines | nemo: text_<split>.txt + labels_<split>.txt")
    output_scheme: Literal[SCHEMES] = Field(  # type: ignore[valid-type]
        "iob2", description="tags written in: iob2 | iob1 | bioes | io (io cannot separate two adjacent entities of "
                            "one type)")
    output_dir: str | None = Field(None, description="where the converted files go (empty = RESULTS/converted)")


class TokenClassificationSpec(TextSpec):
    data: TokDataConfig = Field(default_factory=TokDataConfig, description="dataset")
    inference: TokInferenceConfig = Field(default_factory=TokInferenceConfig, description="inference verb")
    dataset_convert: TokConvertConfig = Field(default_factory=TokConvertConfig, description="dataset_convert verb")
