"""The speech_to_text spec: every key `tkit speech_to_text default_spec` prints."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ...spec import ExportConfig, MinMax, SpecModel, TrainConfig, with_defaults

WHISPER = "whisper_tiny_en"
WHISPER_LEARNING_RATE = 1e-4


class TextNormConfig(SpecModel):
    """How transcripts are normalised for training and scoring (references and hypotheses alike)."""

    lowercase: bool = Field(True, description="lowercase transcripts")
    punctuation: Literal["strip", "keep"] = Field("strip", description="strip | keep punctuation")
    numbers: Literal["keep", "words"] = Field("keep", description="keep digits | words (\"12\" -> \"twelve\")")


class AugmentConfig(SpecModel):
    """Training-time augmentation; each kind applies to an utterance with its probability (0 = off)."""

    speed_prob: float = Field(0.0, ge=0, le=1, description="probability of speed perturbation")
    speed_range: MinMax[float] = Field((0.9, 1.1), description="[min, max] speed factor")
    noise_prob: float = Field(0.0, ge=0, le=1, description="probability of adding white noise")
    noise_snr_db: MinMax[float] = Field((10.0, 30.0), description="[min, max] signal-to-noise ratio in dB")
    spec_augment_prob: float = Field(0.0, ge=0, le=1, description="probability of SpecAugment masks on the features")
    time_masks: int = Field(2, ge=0, le=20, description="SpecAugment: time masks")
    time_width: float = Field(0.05, ge=0, le=0.5, description="SpecAugment: widest time mask, fraction of the "
                                                               "utterance")
    freq_masks: int = Field(2, ge=0, le=10, description="SpecAugment: frequency masks")
    freq_width: int = Field(10, ge=0, le=40, description="SpecAugment: widest frequency mask, mel bands")


class ASRDataConfig(SpecModel):
    train_manifest: str | None = Field(None, description="training utterances: NeMo JSON lines (audio_filepath, "
                                                         "duration, text)")
    val_manifest: str | None = Field(None, description="validation utterances, same format (evaluate scores these)")
    max_duration: float = Field(20.0, gt=0, le=30, description="utterances longer than this (seconds) are skipped "
                                                               "and named")
    duration_tolerance: float = Field(0.5, ge=0, description="a manifest duration may differ from the file's by this "
                                                             "many seconds")
    bucketing: bool = Field(True, description="draw each training batch from utterances of similar duration (less "
                                              "padding; the whisper arch always reads 30 s windows)")
    text: TextNormConfig = Field(default_factory=TextNormConfig, description="transcript normalisation")
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="training augmentation")


class ConvConfig(SpecModel):
    channels: int = Field(128, ge=8, le=1024, description="channels of the conv encoder's blocks")
    blocks: int = Field(3, ge=1, le=16, description="residual blocks")
    repeat: int = Field(2, ge=1, le=8, description="separable convolutions per block")
    kernel: int = Field(11, ge=3, le=63, description="kernel of the first block (later blocks are wider)")


class ASRModelConfig(SpecModel):
    arch: Literal["whisper", "ctc"] = Field("ctc", description="whisper: fine-tune the encoder-decoder | ctc: an "
                                                               "encoder with a CTC head over the transcripts' characters")
    encoder: str = Field(WHISPER, description="ctc: whisper_tiny_en (the pretrained Whisper encoder) | conv (a small "
                                              "QuartzNet-like encoder from scratch); whisper: whisper_tiny_en")
    pretrained: bool | str = Field(True, description="true = the zoo weights; false = random; or a speech_to_text "
                                                     ".ckpt to continue from (CTC: characters both vocabularies share "
                                                     "keep their head rows)")
    whisper_layers: int | None = Field(None, ge=1, le=32, description="ctc on whisper_tiny_en: keep only the first N "
                                                                       "encoder layers (empty = all 4)")
    conv: ConvConfig = Field(default_factory=ConvConfig, description="ctc with encoder=conv: its sizes")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout before the CTC head")
    vocabulary: str = Field("", description="ctc: characters added to those of the training transcripts (e.g. "
                                            "digits the data lacks)")
    freeze_encoder: bool = Field(False, description="train only the head (ctc) or the decoder (whisper)")
    max_tokens: int = Field(96, ge=8, le=448, description="whisper: longest transcript in tokens (decoding stops "
                                                          "there; training targets are cut there)")

    @model_validator(mode="after")
    def _encoder_fits_arch(self) -> "ASRModelConfig":
        m = self
        if m.arch == "whisper" and m.encoder != WHISPER:
            raise ValueError(f"model.encoder={m.encoder!r}: the whisper arch is {WHISPER}'s encoder-decoder; set "
                             f"model.encoder={WHISPER} or model.arch=ctc")
        if m.arch == "ctc" and m.encoder not in (WHISPER, "conv"):
            raise ValueError(f"model.encoder={m.encoder!r}: a ctc model's encoder is {WHISPER} or conv")
        return self


ASRTrainConfig = with_defaults(
    TrainConfig, "ASRTrainConfig", __name__,
    "Training defaults for fine-tuning on a few hundred utterances on a CPU: AdamW, linear decay after 10% warm-up, "
    "the pretrained encoder at a tenth of the learning rate, gradient clipping.",
    {"batch_size": "utterances per step on each device (accumulate_grad_batches multiplies it)",
     "learning_rate": "peak learning rate of the new head (ctc) or of the decoder (whisper); when not given, 1e-3 "
                      "for ctc and 1e-4 for whisper (spec.yaml of the run shows the one used)",
     "backbone_lr_scale": "the pretrained encoder's learning rate is learning_rate x this",
     "early_stopping_metric": "metric early stopping watches (empty = val/wer)",
     "num_workers": "DataLoader worker processes (audio is decoded in them)"},
    epochs=10, batch_size=8, learning_rate=1e-3, optimizer="adamw", weight_decay=0.01, backbone_lr_scale=0.1,
    lr_scheduler="linear", warmup_fraction=0.1, grad_clip_norm=1.0, num_workers=0,
)

ASRExportConfig = with_defaults(
    ExportConfig, "ASRExportConfig", __name__,
    "Export defaults of a speech model: INT8 means dynamic quantisation of the MatMuls (no calibration).",
    {"calibration_images": "utterances used for the parity probe"},
    int8_target="dynamic", calibration_images=4, parity_tolerance=1e-3,
)


class DecodingConfig(SpecModel):
    decoding: Literal["greedy", "beam"] = Field("greedy", description="greedy | beam search")
    beam_size: int = Field(4, ge=1, le=64, description="beams of beam search")
    batch_size: int = Field(8, gt=0, description="utterances per batch")


class ASREvaluationConfig(DecodingConfig):
    worst: int = Field(5, ge=0, description="the utterances with the most errors printed in the log")


class ASRInferenceConfig(DecodingConfig):
    audio: str | None = Field(None, description="an audio file, a folder of them, or a NeMo manifest (.json)")
    vad: bool = Field(True, description="cut recordings at speech pauses (Silero VAD) before transcribing")
    vad_threshold: float = Field(0.5, gt=0, lt=1, description="speech probability threshold")
    min_silence: float = Field(0.3, gt=0, description="a pause at least this long (s) ends a segment")
    max_segment: float = Field(20.0, gt=1, le=30, description="longer speech without a pause is cut here (s)")
    srt: bool = Field(True, description="also write one .srt subtitle file per recording")


class ASRConvertConfig(SpecModel):
    audio_dir: str | None = Field(None, description="a folder of audio files with same-stem transcript files (or "
                                                    "a transcripts.txt / *.tsv of stem<TAB>text)")
    csv: str | None = Field(None, description="instead: a CSV file with a path,text header")
    transcript_ext: str = Field(".txt", description="extension of the per-file transcripts")
    output: str | None = Field(None, description="the manifest to write (empty = RESULTS/manifest.json)")


class SpeechToTextSpec(SpecModel):
    data: ASRDataConfig = Field(default_factory=ASRDataConfig, description="dataset")
    model: ASRModelConfig = Field(default_factory=ASRModelConfig, description="network")
    train: ASRTrainConfig = Field(default_factory=ASRTrainConfig, description="training")
    evaluation: ASREvaluationConfig = Field(default_factory=ASREvaluationConfig, description="evaluate verb")
    inference: ASRInferenceConfig = Field(default_factory=ASRInferenceConfig, description="inference verb")
    export: ASRExportConfig = Field(default_factory=ASRExportConfig, description="export verb")
    dataset_convert: ASRConvertConfig = Field(default_factory=ASRConvertConfig, description="dataset_convert verb")

    @model_validator(mode="after")
    def _whisper_learning_rate(self) -> "SpeechToTextSpec":
        """Fine-tuning all of Whisper wants a tenth of a new CTC head's rate, unless the spec names one."""
        if self.model.arch == "whisper" and "learning_rate" not in self.train.model_fields_set:
            train = self.train.model_copy(update={"learning_rate": WHISPER_LEARNING_RATE})
            object.__setattr__(self, "train", train)  # the spec is frozen once validated: this is its validation
        return self
