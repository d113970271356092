"""CoNLL and NeMo readers, tagging schemes and label lists: every sentence kept or named with file:line."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from transferkit.errors import DataError, SpecError
from transferkit.tasks.token_classification.formats import (
    Sentence, detect_scheme, from_iob2, labels_from_sentences, read_conll, read_labels_file, read_nemo,
    repair_iob2, spans_from_iob2, to_iob2, write_conll, write_nemo)


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def conll(tmp_path: Path, text: str | bytes, name: str = "train.txt") -> Path:
    return write(tmp_path / name, text)


def random_iob2(rng: random.Random, length: int, types=("PER", "LOC", "ORG")) -> list[str]:
    """A valid IOB2 sequence (every I-X continues an X entity), with adjacent entities of one type."""
    tags, open_type = [], None
    for _ in range(length):
        r = rng.random()
        if r < 0.4:
            tags.append("O")
            open_type = None
        elif r < 0.7 or open_type is None:
            open_type = rng.choice(types)
            tags.append(f"B-{open_type}")
        else:
            tags.append(f"I-{open_type}")
    return tags


# ----------------------------------------------------------------------------------------------- CoNLL

CONLL2003 = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O
"""


def test_conll2003_four_columns_reads_the_last_column_and_skips_docstart(tmp_path):
    path = conll(tmp_path, CONLL2003)
    data = read_conll(path)
    assert [s.words for s in data.sentences] == [("EU", "rejects", "German", "call", "."),
                                                 ("Peter", "Blackburn"), ("BRUSSELS", "1996-08-22")]
    assert data.sentences[0].tags == ("B-ORG", "O", "B-MISC", "O", "O")
    assert data.sentences[1].tags == ("B-PER", "I-PER")
    assert [s.where for s in data.sentences] == [f"{path}:3", f"{path}:9", f"{path}:14"]
    assert data.scheme == "iob2" and data.skipped == {} and data.counts == {}


def test_conll_two_columns_crlf_bom_and_no_trailing_blank_line(tmp_path):
    path = conll(tmp_path, b"\xef\xbb\xbfJohn B-PER\r\nlives O\r\n\r\n\r\nin O\r\nGda\xc5\x84sk B-LOC")
    data = read_conll(path)
    assert [s.words for s in data.sentences] == [("John", "lives"), ("in", "Gdańsk")]
    assert [s.tags for s in data.sentences] == [("B-PER", "O"), ("O", "B-LOC")]
    assert data.sentences[1].where == f"{path}:5"


def test_a_line_with_the_wrong_column_count_skips_its_sentence_only(tmp_path):
    path = conll(tmp_path, "EU NNP B-ORG\nrejects VBZ O\n\nPeter B-PER\nBlackburn NNP I-PER\n\nBonn NNP B-LOC\n")
    data = read_conll(path)
    assert [s.words for s in data.sentences] == [("EU", "rejects"), ("Bonn",)]
    assert list(data.skipped) == [f"{path}:4"]
    assert "2 columns where the lines of this file have 3" in data.skipped[f"{path}:4"]
    assert data.counts == {"wrong_column_count": 1}


def test_a_word_without_a_tag_is_a_wrong_column_count(tmp_path):
    path = conll(tmp_path, "John B-PER\nSmith\n\nParis B-LOC\n")
    data = read_conll(path)
    assert [s.words for s in data.sentences] == [("Paris",)]
    assert "word without a tag" in data.skipped[f"{path}:2"]


def test_a_line_that_is_not_utf8_skips_its_sentence_only(tmp_path):
    path = conll(tmp_path, b"Jan B-PER\nKowalski I-PER\n\nZ\xfcrich B-LOC\n\nBerlin B-LOC\n")
    data = read_conll(path)
    assert [s.words for s in data.sentences] == [("Jan", "Kowalski"), ("Berlin",)]
    assert data.skipped == {f"{path}:4": "not UTF-8 text"}
    assert data.counts == {"not_utf8": 1}


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"-DOCSTART- -X- O\n\n"])
def test_an_empty_file_or_one_without_sentences_is_a_data_error(tmp_path, content):
    path = conll(tmp_path, content)
    with pytest.raises(DataError, match=r"data\.val_file: .*train\.txt (is empty|holds no sentences)"):
        read_conll(path, key="data.val_file")


def test_a_missing_file_or_a_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"data\.train_file: .*nope\.txt does not exist"):
        read_conll(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="is not a file"):
        read_conll(tmp_path)


def test_a_file_without_one_usable_sentence_is_a_data_error_naming_an_example(tmp_path):
    path = conll(tmp_path, "John lives in Paris\n\nMary works at Acme Corp\n")  # a NeMo text file read as CoNLL
    with pytest.raises(DataError, match=r"none of the 2 sentences .* can be used, e\.g\. .*train\.txt:1: 'Paris' is "
                                        r"not an IOB2 tag"):
        read_conll(path)


def test_unknown_options_are_spec_errors(tmp_path):
    path = conll(tmp_path, "John B-PER\n")
    with pytest.raises(SpecError, match="data.tag_scheme"):
        read_conll(path, scheme="bilou")
    with pytest.raises(SpecError, match="data.invalid_tags"):
        read_conll(path, invalid_tags="fix")


# --------------------------------------------------------------------------------- tag validation

IOB2_WITH_ERRORS = """John B-PER
Smith I-PER

in O
Paris I-LOC

Acme B-ORG
Paris I-LOC

Bonn B-LOC
"""


def test_iob2_i_tag_after_o_or_another_type_is_skipped_by_default_and_named(tmp_path):
    path = conll(tmp_path, IOB2_WITH_ERRORS)
    data = read_conll(path)
    assert data.scheme == "iob2"  # B- starts after O: not IOB1
    assert [s.words for s in data.sentences] == [("John", "Smith"), ("Bonn",)]
    assert data.skipped == {f"{path}:5": "I-LOC follows O: IOB2 begins an entity with B-LOC",
                            f"{path}:8": "I-LOC follows B-ORG: IOB2 begins an entity with B-LOC"}
    assert data.counts == {"invalid_sequence": 2} and data.repaired == {}


def test_invalid_tags_repair_reads_an_unexpected_i_tag_as_an_entity_start(tmp_path):
    path = conll(tmp_path, IOB2_WITH_ERRORS)
    data = read_conll(path, invalid_tags="repair")
    assert [s.tags for s in data.sentences] == [("B-PER", "I-PER"), ("O", "B-LOC"), ("B-ORG", "B-LOC"), ("B-LOC",)]
    assert list(data.repaired) == [f"{path}:5", f"{path}:8"] and data.skipped == {}
    assert data.counts == {"invalid_sequence": 2}


def test_a_sentence_with_several_problems_is_named_once_with_a_count(tmp_path):
    path = conll(tmp_path, "a O\nb I-PER\nc O\nd I-LOC\n\ne B-PER\n")
    data = read_conll(path, scheme="iob2")
    assert data.skipped == {f"{path}:2": "I-PER follows O: IOB2 begins an entity with B-PER (+1 more in this sentence)"}
    assert data.counts == {"invalid_sequence": 2}


BIOES_WITH_ERRORS = """Jan B-PER
Kowalski E-PER
w O
Gdańsku S-LOC

Anna B-PER
Nowak O

Nowak E-PER

Kraków S-LOC
Gdańsk B-LOC
Poland S-LOC

Acme B-ORG
Corp I-ORG
"""


def test_bioes_misuse_is_named_and_skipped(tmp_path):
    path = conll(tmp_path, BIOES_WITH_ERRORS)
    data = read_conll(path)
    assert data.scheme == "bioes"
    assert [s.words for s in data.sentences] == [("Jan", "Kowalski", "w", "Gdańsku")]
    assert data.sentences[0].tags == ("B-PER", "I-PER", "O", "B-LOC")
    assert data.skipped == {
        f"{path}:7": "O follows B-PER: BIOES ends the PER entity with E-PER first",
        f"{path}:9": "E-PER follows the start of the sentence: E-PER must close an entity begun with B-PER",
        f"{path}:13": "S-LOC follows B-LOC: BIOES ends the LOC entity with E-LOC first",
        f"{path}:16": "the sentence ends after I-ORG: BIOES ends the ORG entity with E-ORG first",
    }


def test_bioes_repair_closes_open_entities_and_reads_a_stray_end_as_one_word(tmp_path):
    path = conll(tmp_path, BIOES_WITH_ERRORS)
    data = read_conll(path, invalid_tags="repair")
    assert [s.tags for s in data.sentences] == [("B-PER", "I-PER", "O", "B-LOC"), ("B-PER", "O"), ("B-PER",),
                                                ("B-LOC", "B-LOC", "B-LOC"), ("B-ORG", "I-ORG")]
    assert len(data.repaired) == 4 and data.skipped == {}


def test_a_tag_the_scheme_does_not_have_is_never_repaired(tmp_path):
    path = conll(tmp_path, "John B-PER\nSmith E-PER\n\nParis B-LOC\n")
    data = read_conll(path, scheme="iob2", invalid_tags="repair")
    assert [s.words for s in data.sentences] == [("Paris",)]
    assert data.skipped == {f"{path}:2": "'E-PER' is not an IOB2 tag (expected O, B-TYPE or I-TYPE)"}
    assert data.counts == {"bad_tag": 1}


def test_a_tag_outside_the_label_set_skips_its_sentence(tmp_path):
    path = conll(tmp_path, "John B-PER\n\nAcme B-ORG\nCorp I-ORG\n\nParis B-LOC\n", name="val.txt")
    data = read_conll(path, key="data.val_file", labels=["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
    assert [s.words for s in data.sentences] == [("John",), ("Paris",)]
    assert data.skipped == {f"{path}:3": "tag 'B-ORG' (type ORG) is not in the label set (types: PER, LOC) "
                                         "(+1 more in this sentence)"}
    assert data.counts == {"unknown_tag": 2}


def test_the_label_set_is_checked_on_the_iob2_form_of_any_scheme(tmp_path):
    path = conll(tmp_path, "Jan B-PER\nKowalski E-PER\n\nParis S-LOC\n")
    data = read_conll(path, labels=["O", "B-PER", "I-PER"])
    assert [s.tags for s in data.sentences] == [("B-PER", "I-PER")]
    assert "S-LOC" in data.skipped[f"{path}:4"]


# ------------------------------------------------------------------------------------------ schemes

@pytest.mark.parametrize("tags, scheme", [
    ([["B-PER", "I-PER", "O", "B-LOC"]], "iob2"),
    ([["O", "O"]], "iob2"),
    ([["B-PER", "O", "B-LOC"]], "iob2"),
    ([["I-PER", "I-PER", "B-PER", "O", "I-LOC"]], "iob1"),
    ([["I-PER", "O", "I-LOC"]], "iob1"),  # IO written with I- prefixes reads the same as IOB1
    ([["B-PER", "E-PER", "O", "S-LOC"]], "bioes"),
    ([["S-PER", "O"]], "bioes"),
    ([["U-PER", "B-LOC", "L-LOC"]], "bioes"),  # BILOU
    ([["PER", "PER", "O", "LOC"]], "iob2"),  # io is never guessed: bare tags must be asked for
    ([["B-PER", "I-PER", "O"], ["B-LOC", "E-LOC"]], "iob2"),  # one stray E-: fewer problems as IOB2
])
def test_auto_detection_picks_the_scheme_with_the_fewest_problems(tags, scheme):
    assert detect_scheme(tags) == scheme


def test_iob1_file_is_detected_and_converted_to_iob2(tmp_path):
    path = conll(tmp_path, "Jan I-PER\nKowalski I-PER\nAnna B-PER\nsaw O\nGdańsk I-LOC\n")
    data = read_conll(path)
    assert data.scheme == "iob1"
    assert data.sentences[0].tags == ("B-PER", "I-PER", "B-PER", "O", "B-LOC")


def test_io_file_with_bare_types_is_converted_to_iob2_when_asked_for(tmp_path):
    path = conll(tmp_path, "Jan PER\nKowalski PER\nw O\nGdańsku LOC\n")
    data = read_conll(path, scheme="io")
    assert data.scheme == "io" and data.sentences[0].tags == ("B-PER", "I-PER", "O", "B-LOC")
    with pytest.raises(DataError, match="'PER' is not an IOB2 tag .*set data.tag_scheme=io"):
        read_conll(path)


def test_iob1_to_iob2_example():
    tags, problems = to_iob2(["I-PER", "I-PER", "B-PER", "I-PER", "O", "I-LOC", "I-ORG", "B-ORG"], "iob1")
    assert tags == ["B-PER", "I-PER", "B-PER", "I-PER", "O", "B-LOC", "B-ORG", "B-ORG"] and problems == []


@pytest.mark.parametrize("scheme", ["iob2", "iob1", "bioes"])
def test_every_scheme_round_trips_through_iob2(scheme):
    rng = random.Random(7)
    for _ in range(300):
        tags = random_iob2(rng, rng.randint(1, 12))
        written = from_iob2(tags, scheme)
        assert to_iob2(written, scheme) == (tags, [])
        assert detect_scheme([written]) in (scheme, "iob2")  # without I-starts / E- / S-, IOB2 reads the same


def test_bioes_example_both_ways():
    iob2 = ["B-PER", "I-PER", "I-PER", "B-PER", "O", "B-LOC", "B-LOC", "I-LOC"]
    bioes = ["B-PER", "I-PER", "E-PER", "S-PER", "O", "S-LOC", "B-LOC", "E-LOC"]
    assert from_iob2(iob2, "bioes") == bioes and to_iob2(bioes, "bioes") == (iob2, [])


def test_io_cannot_write_adjacent_entities_of_one_type(tmp_path):
    assert from_iob2(["B-PER", "I-PER", "O", "B-PER"], "io") == ["I-PER", "I-PER", "O", "I-PER"]
    sentence = Sentence(("Jan", "Anna"), ("B-PER", "B-PER"), "x.txt:1")
    with pytest.raises(DataError, match="x.txt:1: IO cannot separate"):
        write_conll([sentence], tmp_path / "out.txt", scheme="io")


def test_strict_spans_and_repair():
    tags = ["O", "I-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG", "B-ORG"]
    assert spans_from_iob2(tags) == [("LOC", 3, 5), ("ORG", 6, 7)]
    assert repair_iob2(tags) == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "B-ORG"]


@pytest.mark.parametrize("scheme", ["iob2", "iob1", "bioes"])
def test_conll_writer_and_reader_round_trip(tmp_path, scheme):
    rng = random.Random(3)
    sentences = [Sentence(tuple(f"w{i}{j}" for j in range(n)), tuple(random_iob2(rng, n)), "")
                 for i, n in enumerate([3, 1, 7, 5, 9])]
    path = write_conll(sentences, tmp_path / "out.txt", scheme=scheme)
    data = read_conll(path, scheme=scheme)
    assert [(s.words, s.tags) for s in data.sentences] == [(s.words, s.tags) for s in sentences]


# ------------------------------------------------------------------------------------------------ NeMo

def nemo(tmp_path: Path, text: str | bytes, labels: str | bytes) -> tuple[Path, Path]:
    return write(tmp_path / "text.txt", text), write(tmp_path / "labels.txt", labels)


def test_nemo_pair_reads_one_sentence_per_line(tmp_path):
    text, labels = nemo(tmp_path, "Jan Kowalski lives in Gdańsk\n\nAcme  Corp hired\tAnna\n\n",
                        "B-PER I-PER O O B-LOC\n\nB-ORG I-ORG O B-PER\n")
    data = read_nemo(text, labels)
    assert [s.words for s in data.sentences] == [("Jan", "Kowalski", "lives", "in", "Gdańsk"),
                                                 ("Acme", "Corp", "hired", "Anna")]
    assert data.sentences[1].tags == ("B-ORG", "I-ORG", "O", "B-PER")
    assert [s.where for s in data.sentences] == [f"{text}:1", f"{text}:3"]


def test_nemo_length_mismatch_names_both_files_and_the_line(tmp_path):
    text, labels = nemo(tmp_path, "Jan Kowalski\nParis is nice\nBonn\n", "B-PER I-PER\nB-LOC O\nB-LOC\n")
    data = read_nemo(text, labels)
    assert [s.words for s in data.sentences] == [("Jan", "Kowalski"), ("Bonn",)]
    assert data.skipped == {f"{text}:2": f"3 words but {labels}:2 has 2 tags"}
    assert data.counts == {"length_mismatch": 1}


def test_nemo_tag_problems_name_the_labels_line_and_the_word(tmp_path):
    text, labels = nemo(tmp_path, "Jan Kowalski\nin Paris\n", "B-PER I-PER\nO I-LOC\n")
    data = read_nemo(text, labels, scheme="iob2")
    assert data.skipped == {f"{labels}:2": "word 2 'Paris': I-LOC follows O: IOB2 begins an entity with B-LOC"}


def test_nemo_files_with_different_line_counts_are_a_data_error(tmp_path):
    text, labels = nemo(tmp_path, "Jan Kowalski\nin Paris\n\n", "B-PER I-PER\n")
    with pytest.raises(DataError, match=r"text\.txt has 2 lines but data\.train_labels: .*labels\.txt has 1"):
        read_nemo(text, labels)


def test_nemo_line_that_is_not_utf8_is_named_in_its_file(tmp_path):
    text, labels = nemo(tmp_path, "Jan Kowalski\nZ\xfcrich\n".encode("latin-1"), "B-PER I-PER\nB-LOC\n")
    data = read_nemo(text, labels)
    assert data.skipped == {f"{text}:2": "not UTF-8 text"}
    text, labels = nemo(tmp_path, "Jan Kowalski\nZurich\n", b"B-PER I-PER\nB-LOC\xff\n")
    assert read_nemo(text, labels).skipped == {f"{labels}:2": "not UTF-8 text"}


def test_nemo_missing_labels_file_names_its_key(tmp_path):
    text = write(tmp_path / "text.txt", "Jan\n")
    with pytest.raises(DataError, match=r"data\.val_labels: .*labels\.txt does not exist"):
        read_nemo(text, tmp_path / "labels.txt", key="data.val_file", labels_key="data.val_labels")


@pytest.mark.parametrize("scheme", ["iob2", "bioes"])
def test_nemo_writer_and_reader_round_trip(tmp_path, scheme):
    rng = random.Random(5)
    sentences = [Sentence(("Zażółć", "gęślą", "jaźń", "x", "y")[:n], tuple(random_iob2(rng, n)), "")
                 for n in (5, 2, 4)]
    text, labels = write_nemo(sentences, tmp_path / "t.txt", tmp_path / "l.txt", scheme=scheme)
    data = read_nemo(text, labels)
    assert [(s.words, s.tags) for s in data.sentences] == [(s.words, s.tags) for s in sentences]


# ---------------------------------------------------------------------------------------------- labels

def test_labels_from_data_are_o_then_b_and_i_per_sorted_type():
    sentences = [Sentence(("a", "b"), ("B-PER", "I-PER"), ""), Sentence(("c",), ("B-LOC",), ""),
                 Sentence(("d",), ("O",), "")]
    assert labels_from_sentences(sentences) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


@pytest.mark.parametrize("content", ["O\nB-PER\nI-PER\nB-LOC\nI-LOC\n", "PER\nLOC\n", "B-PER\n\nS-LOC\nE-PER\n",
                                     "\ufeffPER\r\nLOC\r\nO\r\n"])
def test_labels_file_in_any_form_gives_the_iob2_list_in_file_order(tmp_path, content):
    path = write(tmp_path / "labels.txt", content)
    assert read_labels_file(path) == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ("O\n", "names no entity type"),
    ("PER LOC\n", r"labels\.txt:1: 'PER LOC' holds 2 fields"),
    ("PER\nB-\n", r"labels\.txt:2: 'B-' names no entity type"),
    (b"PER\n\xff\n", r"labels\.txt:2 is not UTF-8"),
])
def test_bad_labels_file_is_a_data_error_naming_the_line(tmp_path, content, message):
    path = write(tmp_path / "labels.txt", content)
    with pytest.raises(DataError, match=rf"data\.labels_file: .*{message}"):
        read_labels_file(path)


def test_a_tag_no_class_can_be_named_is_a_bad_tag_naming_its_line(tmp_path):
    """Control characters in a tag (data.names: the check every class-name reader makes) skip the sentence."""
    path = conll(tmp_path, "Ada B-PER\n\nParis B-LO\x1bC\n")
    data = read_conll(path)
    assert [s.words for s in data.sentences] == [("Ada",)]
    assert list(data.skipped) == [f"{path}:3"] and "control character" in data.skipped[f"{path}:3"]
    assert data.counts == {"bad_tag": 1}
    text, labels = nemo(tmp_path, "Jan Kowalski\nin Paris\n", "B-PER I-PER\nO B-\x7fLOC\n")
    skipped = read_nemo(text, labels).skipped
    assert list(skipped) == [f"{labels}:2"] and skipped[f"{labels}:2"].startswith("word 2 'Paris': tag ")


def test_a_labels_file_type_no_class_can_be_named_is_a_data_error(tmp_path):
    path = write(tmp_path / "labels.txt", "PER\nL\x1bOC\n")
    with pytest.raises(DataError, match=r"labels\.txt:2: .*control character"):
        read_labels_file(path)
