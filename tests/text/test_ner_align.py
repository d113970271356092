"""Sub-word alignment with the real MiniLM tokenizer, predictions back to words, entity spans with offsets."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from seqeval.scheme import IOB2, Entities

from transferkit.tasks.token_classification.align import (
    IGNORE_INDEX, align_labels, entity_spans, first_pieces, split_words, word_offsets, word_tags)

CLASSES = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
INDEX = {c: i for i, c in enumerate(CLASSES)}


@pytest.fixture(scope="module")
def tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    from transferkit.zoo.huggingface import resolve_model_folder

    tok = tokenizers.Tokenizer.from_file(str(resolve_model_folder("minilm-l6") / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def encode(tokenizer, words, max_length=None):
    if max_length:
        tokenizer.enable_truncation(max_length=max_length)
    try:
        return tokenizer.encode(list(words), is_pretokenized=True)
    finally:
        tokenizer.no_truncation()


WORDS = ["Szczebrzeszyn", "is", "unbelievably", "quiet", "after", "COVID-19", "in", "Gdańsku", "and", "Gdańsk"]
TAGS = ["B-LOC", "O", "O", "O", "O", "B-MISC", "O", "B-LOC", "O", "B-LOC"]


def test_first_piece_of_each_multi_piece_word_carries_its_label(tokenizer):
    enc = encode(tokenizer, WORDS)
    pieces = {w: enc.word_ids.count(i) for i, w in enumerate(WORDS)}
    assert all(pieces[w] >= 2 for w in ("Szczebrzeszyn", "unbelievably", "COVID-19", "Gdańsku"))  # really split
    aligned = align_labels(enc.word_ids, [INDEX[t] for t in TAGS])
    assert len(aligned.labels) == len(enc.ids) and aligned.truncated == [] and aligned.empty == []
    assert aligned.labels[0] == aligned.labels[-1] == IGNORE_INDEX  # [CLS], [SEP]
    labelled = [(enc.word_ids[i], label) for i, label in enumerate(aligned.labels) if label != IGNORE_INDEX]
    assert labelled == [(i, INDEX[t]) for i, t in enumerate(TAGS)]  # one label per word, in order
    for position, label in enumerate(aligned.labels):
        word = enc.word_ids[position]
        is_first = word is not None and enc.word_ids.index(word) == position
        assert (label != IGNORE_INDEX) == is_first


def test_truncation_reports_the_words_cut_off(tokenizer):
    enc = encode(tokenizer, WORDS, max_length=9)  # [CLS] szczebrzeszyn (6 pieces) is [SEP]
    aligned = align_labels(enc.word_ids, [INDEX[t] for t in TAGS])
    assert len(aligned.labels) == 9
    assert aligned.truncated == list(range(2, len(WORDS))) and aligned.empty == []
    assert [label for label in aligned.labels if label != IGNORE_INDEX] == [INDEX["B-LOC"], INDEX["O"]]


def test_a_word_cut_in_the_middle_keeps_its_label_on_its_first_piece(tokenizer):
    enc = encode(tokenizer, ["Anna", "unbelievably"], max_length=5)  # [CLS] anna un ##bel [SEP]
    aligned = align_labels(enc.word_ids, [INDEX["B-PER"], INDEX["O"]])
    assert aligned.truncated == [] and aligned.labels == [IGNORE_INDEX, 1, 0, IGNORE_INDEX, IGNORE_INDEX]


def test_a_word_the_tokenizer_drops_is_reported_empty(tokenizer):
    words = ["Jan", "\u200b", "Kowalski"]
    enc = encode(tokenizer, words)
    aligned = align_labels(enc.word_ids, [INDEX["B-PER"], INDEX["O"], INDEX["I-PER"]])
    assert aligned.empty == [1] and aligned.truncated == []
    assert [label for label in aligned.labels if label != IGNORE_INDEX] == [INDEX["B-PER"], INDEX["I-PER"]]


def test_padding_tokens_are_ignored():
    aligned = align_labels([None, 0, 0, 1, None, None, None], [3, 4])
    assert aligned.labels == [IGNORE_INDEX, 3, IGNORE_INDEX, 4, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    with pytest.raises(ValueError, match="word_ids name word 2"):
        align_labels([None, 0, 2, None], [1, 1])


def logits_for(word_ids, word_classes, n_classes=len(CLASSES), pad_to=None, seed=0):
    """Logits whose first piece of word w peaks at word_classes[w]; every other row peaks elsewhere."""
    rng = np.random.default_rng(seed)
    rows = max(len(word_ids), pad_to or 0)
    logits = rng.normal(size=(rows, n_classes))
    first = first_pieces(word_ids)
    for position in range(rows):
        word = word_ids[position] if position < len(word_ids) else None
        if word is not None and first[word] == position:
            logits[position, word_classes[word]] += 8.0
        else:  # later pieces, specials and padding point at another class: they must not be read
            target = (word_classes[word] + 1) % n_classes if word is not None else 1
            logits[position, target] += 20.0
    return logits


def test_predictions_are_read_at_first_pieces(tokenizer):
    enc = encode(tokenizer, WORDS)
    classes = [INDEX[t] for t in TAGS]
    logits = logits_for(enc.word_ids, classes, pad_to=len(enc.ids) + 5)
    out = word_tags(logits, enc.word_ids, len(WORDS), CLASSES)
    assert out.tags == TAGS and out.missing == []
    for word, position in first_pieces(enc.word_ids).items():
        row = logits[position]
        expected = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
        assert out.scores[word] == pytest.approx(expected.max())
    as_tensor = word_tags(torch.tensor(logits, dtype=torch.float32, requires_grad=True), enc.word_ids,
                          len(WORDS), CLASSES)
    assert as_tensor.tags == TAGS and as_tensor.scores == pytest.approx(out.scores, rel=1e-5)


def test_words_without_tokens_are_predicted_o_without_score(tokenizer):
    words = ["Jan", "\u200b", "Kowalski", "in", "Gdańsku"]
    enc = encode(tokenizer, words, max_length=5)  # [CLS] jan kowalski in [SEP]; Gdańsku cut off
    logits = logits_for(enc.word_ids, [1, 0, 2, 0, 3])
    out = word_tags(logits, enc.word_ids, len(words), CLASSES)
    assert out.tags == ["B-PER", "O", "I-PER", "O", "O"]
    assert out.scores[1] is None and out.scores[4] is None and out.missing == [1, 4]
    with pytest.raises(ValueError, match="do not fit"):
        word_tags(logits[:, :3], enc.word_ids, len(words), CLASSES)


# ----------------------------------------------------------------------------------------------- spans

def test_spans_of_words_read_from_a_file_point_into_the_words_joined_by_spaces():
    words = ["Jan", "Kowalski", "lives", "in", "Gdańsk", "."]
    tags = ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]
    spans = entity_spans(words, tags, scores=[0.9, 0.7, 0.99, 0.99, 0.6, 0.99])
    assert spans == [
        {"type": "PER", "start": 0, "end": 12, "text": "Jan Kowalski", "score": pytest.approx(0.8),
         "word_start": 0, "word_end": 2},
        {"type": "LOC", "start": 22, "end": 28, "text": "Gdańsk", "score": pytest.approx(0.6),
         "word_start": 4, "word_end": 5},
    ]
    assert word_offsets(words)[0] == "Jan Kowalski lives in Gdańsk ."


def test_spans_keep_the_offsets_of_the_original_text_with_unicode_and_odd_spacing():
    text = "  Zażółć\tgęślą  jaźń 🙂 met\u00a0Jan\u3000Kowalski  in São\u2009Paulo.\n"
    words, offsets = split_words(text)
    assert words == ["Zażółć", "gęślą", "jaźń", "🙂", "met", "Jan", "Kowalski", "in", "São", "Paulo."]
    tags = ["B-MISC", "I-MISC", "I-MISC", "O", "O", "B-PER", "I-PER", "O", "B-LOC", "I-LOC"]
    spans = entity_spans(words, tags, text=text, offsets=offsets)
    assert [(s["type"], s["text"]) for s in spans] == [
        ("MISC", "Zażółć\tgęślą  jaźń"), ("PER", "Jan\u3000Kowalski"), ("LOC", "São\u2009Paulo.")]
    for s in spans:
        assert text[s["start"]:s["end"]] == s["text"] and s["score"] is None
    assert spans[1]["start"] == text.index("Jan") and spans[1]["word_start"] == 5 and spans[1]["word_end"] == 7
    assert entity_spans(words, tags, text=text) == spans  # offsets found in the text give the same


def test_punctuation_split_keeps_inner_punctuation_and_offsets():
    text = "(Gdańsk), COVID-19 U.S. “Łódź”!"
    words, offsets = split_words(text, punctuation=True)
    assert words == ["(", "Gdańsk", ")", ",", "COVID-19", "U.S", ".", "“", "Łódź", "”", "!"]
    assert all(text[a:b] == w for w, (a, b) in zip(words, offsets))


def test_spans_are_the_entities_seqeval_strict_mode_counts():
    rng = random.Random(11)
    tags_pool = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    for _ in range(300):
        tags = [rng.choice(tags_pool) for _ in range(rng.randint(1, 10))]
        words = [f"w{i}" for i in range(len(tags))]
        ours = {(s["type"], s["word_start"], s["word_end"]) for s in entity_spans(words, tags)}
        theirs = {(e.tag, e.start, e.end) for e in Entities([tags], IOB2).entities[0]}
        assert ours == theirs, tags


def test_spans_from_raw_text_through_the_tokenizer_end_to_end(tokenizer):
    text = "Yesterday  Jan Kowalski flew from Szczebrzeszyn to Gdańsku."
    words, offsets = split_words(text, punctuation=True)
    truth = ["O", "B-PER", "I-PER", "O", "O", "B-LOC", "O", "B-LOC", "O"]
    enc = encode(tokenizer, words)
    out = word_tags(logits_for(enc.word_ids, [INDEX[t] for t in truth]), enc.word_ids, len(words), CLASSES)
    spans = entity_spans(words, out.tags, out.scores, text=text, offsets=offsets)
    assert [(s["type"], s["text"], s["start"]) for s in spans] == [
        ("PER", "Jan Kowalski", 11), ("LOC", "Szczebrzeszyn", 34), ("LOC", "Gdańsku", 51)]
    assert all(0 < s["score"] <= 1 for s in spans)


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="2 words but 1 tags"):
        entity_spans(["a", "b"], ["O"])
    with pytest.raises(ValueError, match="not in the text"):
        entity_spans(["a", "b"], ["O", "O"], text="a c")
