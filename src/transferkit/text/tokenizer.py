"""TextTokenizer: text -> token ids from a tokenizer.json text, with the `tokenizers` library only.

The tokenizer.json text travels inside a model's metadata (ModelMeta.arch["tokenizer_json"]), so a
checkpoint or an exported .onnx tokenizes exactly as it did in training, with no model folder around.
Padding is never done here (batches are padded to their own longest sentence by text.data); every
encoding is truncated to `max_length` tokens, special tokens ([CLS] ... [SEP]) included.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from tokenizers import Encoding, Tokenizer, normalizers

from ..errors import ModelError

TOKENIZER_FILE = "tokenizer.json"


def _lowercases(node: Any) -> bool:
    """Whether a tokenizer.json normalizer (a dict, possibly a Sequence of them) lowercases its input."""
    if not isinstance(node, dict):
        return False
    kind = node.get("type")
    if kind == "Lowercase":
        return True
    if kind == "BertNormalizer":
        return bool(node.get("lowercase"))
    if kind == "Sequence":
        return any(_lowercases(n) for n in node.get("normalizers") or [])
    return False


def tokenizer_lowercases(tokenizer_json: str) -> bool:
    """Whether this tokenizer lowercases text itself (uncased models such as MiniLM do)."""
    try:
        return _lowercases(json.loads(tokenizer_json).get("normalizer"))
    except (ValueError, AttributeError):
        return False


def read_tokenizer_json(folder: str | Path) -> str:
    """The tokenizer.json text of a Hugging Face model folder; folders with only the older files (vocab.txt,
    sentencepiece ...) are converted through transformers' fast tokenizer once."""
    folder = Path(folder)
    path = folder / TOKENIZER_FILE
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ModelError(f"{path} cannot be read ({type(e).__name__}); copy the model folder again") from None
    try:
        from transformers import AutoTokenizer

        fast = AutoTokenizer.from_pretrained(str(folder), use_fast=True)
        return fast.backend_tokenizer.to_str()
    except Exception as e:  # transformers raises many types for "no tokenizer here"
        raise ModelError(f"{folder} has no {TOKENIZER_FILE} and transformers could not build a fast tokenizer from its "
                         f"other files ({type(e).__name__}); add the model's {TOKENIZER_FILE} to the folder") from None


class TextTokenizer:
    """Text (or pre-split words) -> tokenizers.Encoding (ids, attention mask, word_ids, character offsets).

    `lowercase=True` lowercases before tokenizing when the tokenizer does not already (offsets still point
    into the original text); False leaves the tokenizer as it is."""

    def __init__(self, tokenizer_json: str, max_length: int, lowercase: bool = False):
        try:
            self._tok = Tokenizer.from_str(tokenizer_json)
        except Exception as e:  # tokenizers raises a bare Exception for malformed JSON
            raise ModelError(f"the model's tokenizer cannot be read ({str(e).splitlines()[0][:120]}); "
                             "retrain or re-export the model") from None
        if max_length < 3:
            raise ModelError(f"max_length {max_length} leaves no room for a token between [CLS] and [SEP]")
        self.max_length = int(max_length)
        self.lowercase = bool(lowercase)
        self._tok.no_padding()
        self._tok.enable_truncation(self.max_length)
        if lowercase and not tokenizer_lowercases(tokenizer_json):
            existing = self._tok.normalizer
            self._tok.normalizer = normalizers.Sequence([normalizers.Lowercase()] + ([existing] if existing else []))
        pad = self._tok.token_to_id("[PAD]")
        if pad is None:
            pad = self._tok.token_to_id("<pad>")
        self.pad_id = int(pad) if pad is not None else 0
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, texts: Sequence[str]) -> list[Encoding]:
        return self._tok.encode_batch(list(texts))

    def encode_words(self, sentences: Sequence[Sequence[str]]) -> list[Encoding]:
        """Pre-split words -> encodings whose `word_ids` give each token's word (None for special tokens)."""
        return self._tok.encode_batch([list(words) for words in sentences], is_pretokenized=True)

    def special_token_count(self) -> int:
        """Tokens the tokenizer adds around one sentence ([CLS] and [SEP]: 2)."""
        return self._tok.num_special_tokens_to_add(False)
