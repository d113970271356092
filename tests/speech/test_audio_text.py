"""Transcript normalisation: the same rules for training targets and for both sides of scoring."""
from __future__ import annotations

import pytest

from transferkit.audio.text import TextNorm, normalize, number_words

DEFAULT = TextNorm()


@pytest.mark.parametrize("raw, expected", [
    ("Hello,   World!", "hello world"),
    ("  tabs\tand\nnewlines  ", "tabs and newlines"),
    ("Don\u2019t stop \u2014 it's fine.", "don't stop it's fine"),
    ("'quoted' words", "quoted words"),
    ("well-known end.Start", "well known end start"),
    ("Caf\u00e9 na\u0131ve", "caf\u00e9 na\u0131ve"),
    ("cafe\u0301", "caf\u00e9"),  # decomposed accents are composed (NFKC)
    ("I paid $12 (twice)", "i paid 12 twice"),
    ("...", ""),
])
def test_default_lowercases_and_strips_punctuation(raw, expected):
    assert normalize(raw, DEFAULT) == expected


def test_keep_case_and_punctuation():
    norm = TextNorm(lowercase=False, punctuation="keep")
    assert normalize("  Hello,   World! ", norm) == "Hello, World!"


@pytest.mark.parametrize("raw, expected", [
    ("3 apples", "three apples"),
    ("42", "forty two"),
    ("room 101", "room one hundred one"),
    ("1,305 times", "one thousand three hundred five times"),
    ("2000000", "two million"),
    ("$9.50", "nine point five zero"),
    ("the 21st and 3rd", "the twenty first and third"),
    ("a3 stays", "a3 stays"),
])
def test_numbers_as_words(raw, expected):
    assert normalize(raw, TextNorm(numbers="words")) == expected


def test_numbers_kept_by_default():
    assert normalize("3 apples", DEFAULT) == "3 apples"


def test_number_words_edges():
    assert number_words(0) == "zero"
    assert number_words(19) == "nineteen"
    assert number_words(90) == "ninety"
    assert number_words(1000001) == "one million one"


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="punctuation"):
        TextNorm(punctuation="remove")
    with pytest.raises(ValueError, match="numbers"):
        TextNorm(numbers="digits")
