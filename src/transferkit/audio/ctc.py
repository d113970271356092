"""CTC speech models: a character vocabulary (blank = 0), two encoders with a linear CTC head, greedy and prefix
beam decoding, and moving a trained head to another vocabulary.

Encoders (features [N, n_mels, T] -> states [N, ceil(T / 2), C]; both halve the frame rate):
  - `WhisperEncoderCTC`: Whisper's pretrained encoder read at any length up to 30 s. Whisper's own forward insists
    on 3000 frames; here the positional embedding is sliced to the input's length, so a 2 s clip costs 2 s of
    compute, not 30 s.
  - `ConvEncoder`: a small QuartzNet-like encoder (time-channel separable 1-D convolutions, batch norm, residual
    blocks) trained from scratch.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..engine.checkpoint import LoadReport, transfer_weights
from ..errors import DataError, ModelError

BLANK = "<blank>"


# -- vocabulary ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CtcVocabulary:
    """CTC output symbols: `tokens[0]` is the blank, then one character per symbol (space included)."""

    tokens: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.tokens or self.tokens[0] != BLANK:
            raise ModelError(f"a CTC vocabulary starts with {BLANK}; got {list(self.tokens[:3])}")
        chars = self.tokens[1:]
        if any(len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
            raise ModelError("a CTC vocabulary holds distinct single characters after the blank")

    @classmethod
    def from_texts(cls, texts: Iterable[str], extra: str = "") -> "CtcVocabulary":
        """Every character of `texts` (and `extra`), sorted: the same texts always give the same vocabulary."""
        chars = set(extra)
        for text in texts:
            chars.update(text)
        return cls((BLANK, *sorted(chars)))

    @property
    def characters(self) -> tuple[str, ...]:
        return self.tokens[1:]

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """Symbol ids of `text`; a DataError names characters the vocabulary lacks."""
        index = {c: i for i, c in enumerate(self.tokens)}
        missing = sorted({c for c in text if c not in index})
        if missing:
            raise DataError(f"characters {missing} are not in the model's vocabulary")
        return [index[c] for c in text]

    def encode_known(self, text: str) -> list[int]:
        """Symbol ids of the characters of `text` the vocabulary has (validation loss of transcripts with others)."""
        index = {c: i for i, c in enumerate(self.tokens)}
        return [index[c] for c in text if c in index]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.tokens[i] for i in ids if 0 < i < len(self.tokens))


def vocabulary_row_map(old: Sequence[str], new: Sequence[str]) -> list[tuple[int, int]]:
    """(old_row, new_row) for every symbol both vocabularies have (exact match: "A" and "a" differ)."""
    index = {token: i for i, token in enumerate(old)}
    return [(index[token], j) for j, token in enumerate(new) if token in index]


@dataclass
class VocabularyLoadReport(LoadReport):
    """A LoadReport that also names the characters whose head rows were kept, started fresh, or left behind."""

    characters: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {**super().as_dict(), "characters": self.characters}


def transfer_ctc_weights(net: "CtcNet", state: Mapping[str, torch.Tensor], source: str, old: Sequence[str],
                         new: Sequence[str]) -> VocabularyLoadReport:
    """Load a CTC checkpoint's weights into `net` whose vocabulary is `new`: the encoder as it is, the head's rows
    of the symbols both vocabularies share; the other rows keep their fresh initialisation."""
    rows = vocabulary_row_map(old, new)
    loaded = transfer_weights(net, dict(state), source, {"head.weight": rows, "head.bias": rows})
    olds, news = set(old), set(new)
    chars = {"kept": [c for c in new if c in olds and c != BLANK], "new": [c for c in new if c not in olds],
             "dropped": [c for c in old if c not in news]}
    return VocabularyLoadReport(**vars(loaded), characters=chars)


# -- encoders ------------------------------------------------------------------------------------------------------

def output_lengths(frames: torch.Tensor) -> torch.Tensor:
    """Encoder steps for inputs of `frames` feature frames (both encoders halve the rate: ceil(frames / 2))."""
    return torch.div(frames + 1, 2, rounding_mode="floor")


class WhisperEncoderCTC(nn.Module):
    """Whisper's encoder (conv stem, sinusoid-initialised learned positions, transformer layers) on inputs of any
    length up to the 1500 positions it has; `layers` keeps only the first few transformer layers."""

    def __init__(self, config: Mapping[str, Any], layers: int | None = None):
        super().__init__()
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        cfg = WhisperConfig(**dict(config))
        if layers is not None:
            cfg.encoder_layers = int(layers)
        cfg._attn_implementation = "eager"
        self.encoder = WhisperEncoder(cfg)
        self.width = cfg.d_model
        self.max_steps = cfg.max_source_positions

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        x = nn.functional.gelu(enc.conv1(features))
        x = nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
        x = x + enc.embed_positions.weight[: x.shape[1]]  # [:T] of the 1500 positions (the data caps T)
        x = nn.functional.dropout(x, p=enc.dropout, training=self.training)
        for layer in enc.layers:
            out = layer(x, None)
            x = out[0] if isinstance(out, tuple) else out
        return enc.layer_norm(x)


class _Separable(nn.Module):
    """Depthwise conv over time, pointwise conv over channels, batch norm: one QuartzNet sub-block."""

    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__()
        self.depthwise = nn.Conv1d(cin, cin, kernel, padding=kernel // 2, groups=cin, bias=False)
        self.pointwise = nn.Conv1d(cin, cout, 1, bias=False)
        self.norm = nn.BatchNorm1d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.pointwise(self.depthwise(x)))


class _Block(nn.Module):
    def __init__(self, channels: int, kernel: int, repeat: int, dropout: float):
        super().__init__()
        self.subs = nn.ModuleList(_Separable(channels, channels, kernel) for _ in range(repeat))
        self.residual = nn.Sequential(nn.Conv1d(channels, channels, 1, bias=False), nn.BatchNorm1d(channels))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for i, sub in enumerate(self.subs):
            y = sub(y)
            if i < len(self.subs) - 1:
                y = self.dropout(torch.relu(y))
        return self.dropout(torch.relu(y + self.residual(x)))


class ConvEncoder(nn.Module):
    """QuartzNet-like: a strided prologue, `blocks` residual blocks of `repeat` separable convolutions with growing
    kernels, and a pointwise epilogue; [N, n_mels, T] -> [N, ceil(T / 2), 2 x channels]."""

    def __init__(self, n_mels: int = 80, channels: int = 128, blocks: int = 3, repeat: int = 2, kernel: int = 11,
                 dropout: float = 0.1):
        super().__init__()
        self.prologue = nn.Sequential(nn.Conv1d(n_mels, n_mels, 11, stride=2, padding=5, groups=n_mels, bias=False),
                                      nn.Conv1d(n_mels, channels, 1, bias=False), nn.BatchNorm1d(channels), nn.ReLU())
        kernels = [kernel + 2 * 2 * i for i in range(blocks)]  # 11, 15, 19 ...: wider context deeper in
        self.blocks = nn.Sequential(*(_Block(channels, k, repeat, dropout) for k in kernels))
        self.epilogue = nn.Sequential(nn.Conv1d(channels, 2 * channels, 1, bias=False), nn.BatchNorm1d(2 * channels),
                                      nn.ReLU())
        self.width = 2 * channels
        self.max_steps = None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.epilogue(self.blocks(self.prologue(features))).permute(0, 2, 1)


class CtcNet(nn.Module):
    """features [N, n_mels, T] -> logits [N, ceil(T / 2), vocabulary]: an encoder (`backbone`) and a linear head."""

    def __init__(self, backbone: nn.Module, vocabulary: int, dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.width, vocabulary)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.backbone(features)))


def build_ctc_net(arch: Mapping[str, Any]) -> CtcNet:
    """The CTC network a ModelMeta.arch describes (encoder "whisper" or "conv", its sizes, the vocabulary)."""
    vocab = len(arch["vocabulary"])
    if arch["encoder"] == "whisper":
        backbone = WhisperEncoderCTC(arch["whisper_config"], arch.get("whisper_layers"))
    elif arch["encoder"] == "conv":
        conv = arch.get("conv") or {}
        backbone = ConvEncoder(n_mels=int(arch.get("n_mels", 80)), **conv)
    else:
        raise ModelError(f"unknown CTC encoder {arch['encoder']!r} in the model's metadata; retrain it")
    return CtcNet(backbone, vocab, float(arch.get("dropout", 0.1)))


# -- decoding ------------------------------------------------------------------------------------------------------

def greedy_ctc(logits: torch.Tensor, lengths: torch.Tensor | None = None) -> list[list[int]]:
    """Best symbol per step, repeats merged, blanks removed; one id list per row (its first `lengths` steps)."""
    best = logits.detach().argmax(-1).cpu().numpy()
    steps = lengths.tolist() if lengths is not None else [best.shape[1]] * best.shape[0]
    out = []
    for row, n in zip(best, steps):
        row = row[: int(n)]
        keep = np.ones(len(row), dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        out.append([int(s) for s in row[keep] if s != 0])
    return out


def _logadd(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


def prefix_beam_ctc(log_probs: np.ndarray, beam: int = 8, prune: float = -12.0) -> list[int]:
    """CTC prefix beam search over [steps, vocabulary] log-probabilities (no language model): the prefix whose
    summed probability over all its alignments is highest. Symbols below `prune` (log) at a step are not tried."""
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}  # prefix -> (ends in blank, not)
    for frame in log_probs:
        candidates = [int(c) for c in np.argsort(frame)[::-1][:beam] if frame[c] >= prune] or [int(frame.argmax())]
        nxt: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [-math.inf, -math.inf])
        for prefix, (pb, pnb) in beams.items():
            total = _logadd(pb, pnb)
            for c in candidates:
                p = float(frame[c])
                if c == 0:
                    cell = nxt[prefix]
                    cell[0] = _logadd(cell[0], total + p)
                    continue
                extended = prefix + (c,)
                cell = nxt[extended]
                if prefix and prefix[-1] == c:
                    cell[1] = _logadd(cell[1], pb + p)  # a repeated symbol needs a blank between
                    same = nxt[prefix]
                    same[1] = _logadd(same[1], pnb + p)  # ... otherwise it merges into the prefix
                else:
                    cell[1] = _logadd(cell[1], total + p)
        ranked = sorted(nxt.items(), key=lambda kv: -_logadd(*kv[1]))[:beam]
        beams = {prefix: (pb, pnb) for prefix, (pb, pnb) in ranked}
    best = max(beams.items(), key=lambda kv: _logadd(*kv[1]))[0]
    return list(best)


def beam_ctc(logits: torch.Tensor, lengths: torch.Tensor | None = None, beam: int = 8) -> list[list[int]]:
    """prefix_beam_ctc for each row of a batch of logits [N, steps, vocabulary]."""
    logp = torch.log_softmax(logits.detach().float(), -1).cpu().numpy()
    steps = lengths.tolist() if lengths is not None else [logp.shape[1]] * logp.shape[0]
    return [prefix_beam_ctc(row[: int(n)], beam) for row, n in zip(logp, steps)]


def ctc_loss(logits: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor
             ) -> torch.Tensor:
    """Mean CTC loss per target symbol (blank 0); impossible alignments (too-short inputs) count as zero."""
    logp = torch.log_softmax(logits.float(), -1).transpose(0, 1)  # [T, N, V]
    return nn.functional.ctc_loss(logp, targets, lengths, target_lengths, blank=0, reduction="mean",
                                  zero_infinity=True)




