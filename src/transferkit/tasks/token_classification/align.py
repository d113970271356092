"""Between words and sub-word tokens: training labels per token, predictions back per word, entity spans.

A fast tokenizer given pre-split words (`encode(words, is_pretokenized=True)`) reports for every token the
word it came from (`word_ids`, None for [CLS], [SEP] and padding). The FIRST piece of a word carries the
word's label; its other pieces and the special tokens get IGNORE_INDEX, which the loss skips. Predictions
are read at the same first pieces, so one word gives one tag.

A word can have no token at all: truncation at max_length cut it off (`truncated`: the words after the
last word that kept a token), or the tokenizer dropped it entirely, e.g. a zero-width space or a control
character (`empty`: a word with no token before that point). A sentence that ends in such a dropped word
reports it as truncated: the two cannot be told apart from word_ids alone. Neither kind is trained on;
in predictions they are tagged O with no score.

Character offsets are Python string indices (code points) into the original text, end exclusive, so
`text[start:end]` is the entity's text. Words read from a file (CoNLL, NeMo) have no original text: they
are joined by single spaces and the offsets point into that string.
"""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .formats import OUTSIDE, spans_from_iob2

IGNORE_INDEX = -100  # torch.nn.CrossEntropyLoss's default ignore_index


@dataclass(frozen=True)
class Alignment:
    """Per-token label ids of one encoded sentence, and the words that got no token."""

    labels: list[int]  # one per token: the word's label on its first piece, IGNORE_INDEX elsewhere
    truncated: list[int]  # word indices cut off by truncation (no token after the last word that has one)
    empty: list[int]  # word indices the tokenizer turned into no token at all


@dataclass(frozen=True)
class WordTags:
    """A model's prediction per word: tag, probability of that tag, and the words it never saw."""

    tags: list[str]
    scores: list[float | None]  # softmax probability of the tag at the word's first piece; None when missing
    missing: list[int]  # words without a token (truncated or empty): tagged O, score None


def first_pieces(word_ids: Sequence[int | None]) -> dict[int, int]:
    """Word index -> index of the word's first token."""
    first: dict[int, int] = {}
    for position, word in enumerate(word_ids):
        if word is not None and word not in first:
            first[word] = position
    return first


def _missing(first: dict[int, int], n_words: int) -> tuple[list[int], list[int]]:
    last = max(first, default=-1)
    if last >= n_words:
        raise ValueError(f"word_ids name word {last} but the sentence has {n_words} words")
    empty = [w for w in range(last) if w not in first]
    return list(range(last + 1, n_words)), empty


def align_labels(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> Alignment:
    """Word label ids -> token label ids: the first piece of each word carries its label, the rest IGNORE_INDEX."""
    first = first_pieces(word_ids)
    truncated, empty = _missing(first, len(word_labels))
    labels = [IGNORE_INDEX] * len(word_ids)
    for word, position in first.items():
        labels[position] = int(word_labels[word])
    return Alignment(labels, truncated, empty)


def _as_array(logits: Any) -> np.ndarray:
    if hasattr(logits, "detach"):  # a torch tensor, without importing torch here
        logits = logits.detach().float().cpu().numpy()
    return np.asarray(logits, dtype=np.float64)


def word_tags(logits: Any, word_ids: Sequence[int | None], n_words: int, classes: Sequence[str]) -> WordTags:
    """Token logits [L, C] of one sentence (L >= len(word_ids); padding rows ignored) -> tag and score per word."""
    scores_at = _as_array(logits)
    if scores_at.ndim != 2 or scores_at.shape[1] != len(classes) or scores_at.shape[0] < len(word_ids):
        raise ValueError(f"logits of shape {scores_at.shape} do not fit {len(word_ids)} tokens and "
                         f"{len(classes)} classes")
    first = first_pieces(word_ids)
    truncated, empty = _missing(first, n_words)
    tags: list[str] = [OUTSIDE] * n_words
    scores: list[float | None] = [None] * n_words
    for word, position in first.items():
        row = scores_at[position]
        probs = np.exp(row - row.max())
        probs /= probs.sum()
        best = int(probs.argmax())
        tags[word], scores[word] = classes[best], float(probs[best])
    return WordTags(tags, scores, sorted(empty + truncated))


# ----------------------------------------------------------------------------------- words and text

def _is_punctuation(char: str) -> bool:
    return unicodedata.category(char)[0] in "PS"


def split_words(text: str, punctuation: bool = False) -> tuple[list[str], list[tuple[int, int]]]:
    """Raw text -> words and their (start, end) offsets in `text`.

    Words are runs of non-whitespace (any Unicode whitespace separates). With `punctuation`, punctuation
    and symbol characters at either end of a run become words of their own, one character each, as in
    CoNLL data: "(Gdańsk)." -> "(", "Gdańsk", ")", "."; inner ones stay ("COVID-19", "U.S")."""
    words: list[str] = []
    offsets: list[tuple[int, int]] = []
    for match in re.finditer(r"\S+", text):
        start, end = match.span()
        if not punctuation:
            words.append(match.group())
            offsets.append((start, end))
            continue
        head = start
        while head < end and _is_punctuation(text[head]):
            head += 1
        tail = end
        while tail > head and _is_punctuation(text[tail - 1]):
            tail -= 1
        pieces = [(i, i + 1) for i in range(start, head)]
        if tail > head:
            pieces.append((head, tail))
        pieces += [(i, i + 1) for i in range(tail, end)]
        for a, b in pieces:
            words.append(text[a:b])
            offsets.append((a, b))
    return words, offsets


def word_offsets(words: Sequence[str], text: str | None = None) -> tuple[str, list[tuple[int, int]]]:
    """Where each word is in `text` (found left to right), or in the words joined by single spaces."""
    if text is None:
        text, offsets, position = " ".join(words), [], 0
        for word in words:
            offsets.append((position, position + len(word)))
            position += len(word) + 1
        return text, offsets
    offsets, position = [], 0
    for i, word in enumerate(words):
        start = text.find(word, position)
        if start < 0:
            raise ValueError(f"word {i} {word!r} is not in the text after offset {position}")
        position = start + len(word)
        offsets.append((start, position))
    return text, offsets


def entity_spans(words: Sequence[str], tags: Sequence[str], scores: Sequence[float | None] | None = None,
                 text: str | None = None, offsets: Sequence[tuple[int, int]] | None = None) -> list[dict]:
    """IOB2 word tags -> entities {type, start, end, text, score, word_start, word_end}.

    Entities are read strictly (spans_from_iob2: an I-X that continues nothing is in no entity), the same
    ones entity_report scores. start/end are character offsets (end exclusive) into `text`: the original
    text with `offsets` of each word when given (e.g. from split_words), else found in `text` left to
    right, else into the words joined by single spaces; word_end is exclusive too. score is the mean of
    the entity's word scores (None without scores)."""
    if len(tags) != len(words) or (scores is not None and len(scores) != len(words)):
        raise ValueError(f"{len(words)} words but {len(tags)} tags" +
                         ("" if scores is None else f" and {len(scores)} scores"))
    if offsets is None:
        text, offsets = word_offsets(words, text)
    elif text is None or len(offsets) != len(words):
        raise ValueError("offsets need the text they point into and one (start, end) per word")
    spans = []
    for typ, first, last in spans_from_iob2(tags):
        start, end = offsets[first][0], offsets[last - 1][1]
        known = [s for s in scores[first:last] if s is not None] if scores is not None else []
        spans.append({"type": typ, "start": start, "end": end, "text": text[start:end],
                      "score": math.fsum(known) / len(known) if known else None,
                      "word_start": first, "word_end": last})
    return spans
