"""Transcript normalisation, applied the same way to training targets and to both sides of scoring."""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
# Apostrophe look-alikes that keyboards and word processors put in "don't".
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u00b4": "'"})
# Digits, optionally grouped with commas ("12,500"), optionally with a decimal part ("9.50").
_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+)|(st|nd|rd|th))?(?![\w])", re.IGNORECASE)
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}


@dataclass(frozen=True)
class TextNorm:
    """How transcripts are normalised. `punctuation="strip"` removes punctuation and symbols (apostrophes inside
    words stay: "don't"); `numbers="words"` spells numbers out in English ("42" -> "forty two",
    "9.50" -> "nine point five zero", "3rd" -> "third")."""

    lowercase: bool = True
    punctuation: Literal["strip", "keep"] = "strip"
    numbers: Literal["keep", "words"] = "keep"

    def __post_init__(self) -> None:
        if self.punctuation not in ("strip", "keep"):
            raise ValueError(f"punctuation must be 'strip' or 'keep', not {self.punctuation!r}")
        if self.numbers not in ("keep", "words"):
            raise ValueError(f"numbers must be 'keep' or 'words', not {self.numbers!r}")


def number_words(n: int) -> str:
    """English words for a non-negative integer: 1305 -> "one thousand three hundred five" (no "and")."""
    if n < 0:
        raise ValueError(f"number_words takes a non-negative integer, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {number_words(rest)}" if rest else "")
    for scale, word in _SCALES:
        if n >= scale:
            high, rest = divmod(n, scale)
            return f"{number_words(high)} {word}" + (f" {number_words(rest)}" if rest else "")
    raise AssertionError("unreachable")


def _spell(match: re.Match) -> str:
    whole = int(match.group(1).replace(",", ""))
    if whole >= 10**15:  # an id or a phone number: read digit by digit
        words = " ".join(_ONES[int(d)] for d in match.group(1) if d.isdigit())
    else:
        words = number_words(whole)
    if match.group(2):
        words += " point " + " ".join(_ONES[int(d)] for d in match.group(2))
    elif match.group(3):  # 21st -> twenty first
        head, _, last = words.rpartition(" ")
        last = _ORDINAL_WORDS.get(last) or (last[:-1] + "ieth" if last.endswith("y") else last + "th")
        words = f"{head} {last}" if head else last
    return f" {words} "


def _strip_punctuation(text: str) -> str:
    out = []
    for i, ch in enumerate(text):
        category = unicodedata.category(ch)
        if ch == "'":
            inside = 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
            out.append(ch if inside else " ")
        elif category[0] in "PS":
            out.append(" ")  # "end.Start" and "well-known" become two words, not one
        else:
            out.append(ch)
    return "".join(out)


def normalize(text: str, norm: TextNorm) -> str:
    """`text` normalised by `norm`; always NFKC-composed with whitespace collapsed to single spaces."""
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)
    if norm.numbers == "words":
        text = _NUMBER.sub(_spell, text)
    if norm.lowercase:
        text = text.lower()
    if norm.punctuation == "strip":
        text = _strip_punctuation(text)
    return " ".join(text.split())
