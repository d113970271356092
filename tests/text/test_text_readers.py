"""Text classification files: TSV, CSV and JSON lines read alike; every unusable row is skipped and named
file:line with its reason, never a traceback; labels come as names or as indices into data.labels_file."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from transferkit.errors import DataError, SpecError
from transferkit.spec import load_spec
from transferkit.tasks.text_classification.data import TextClassificationData, read_label_names, read_rows
from transferkit.tasks.text_classification.spec import TextClassificationSpec
from transferkit.text.tokenizer import TextTokenizer


def spec(*overrides: str) -> TextClassificationSpec:
    return load_spec(TextClassificationSpec, None, list(overrides))


@pytest.fixture(scope="module")
def tokenizer(minilm_folder) -> TextTokenizer:
    return TextTokenizer((minilm_folder / "tokenizer.json").read_text(), 32)


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def rows_of(path: Path, *overrides: str, multi: bool = False):
    return read_rows(path, "data.train_file", spec(*overrides).data, multi)


def test_tsv_csv_and_jsonl_give_the_same_rows(tmp_path):
    tsv = write(tmp_path / "a.tsv", "sentence\tlabel\nthe app crashes\ttechnical\nrefund me\tbilling\n")
    csv = write(tmp_path / "a.csv", 'text,label\n"the app crashes",technical\nrefund me,billing\n')
    jsonl = write(tmp_path / "a.jsonl", '{"text": "the app crashes", "label": "technical"}\n'
                                        '{"text": "refund me", "label": "billing"}\n')
    got = [[(r.text, r.labels) for r in rows_of(p).rows] for p in (tsv, csv, jsonl)]
    assert got[0] == got[1] == got[2] == [("the app crashes", ("technical",)), ("refund me", ("billing",))]


def test_csv_columns_are_named_by_spec_keys_with_defaults(tmp_path):
    path = write(tmp_path / "t.csv", "id,sentence,category,extra\n1,hello there,greet,x\n2,\"bye, now\",leave,y\n")
    read = rows_of(path, "data.label_column=category")
    assert [(r.text, r.labels) for r in read.rows] == [("hello there", ("greet",)), ("bye, now", ("leave",))]
    with pytest.raises(DataError, match="data.label_column") as missing:
        rows_of(path)  # neither label nor labels in the header
    assert "category" in str(missing.value) and "\n" not in str(missing.value)
    with pytest.raises(DataError, match="'topic'"):
        rows_of(path, "data.label_column=topic")


def test_every_bad_tsv_row_is_named_with_file_and_line(tmp_path):
    path = write(tmp_path / "bad.tsv", b"good one\tbilling\n"
                                       b"three\tcolumns\there\n"
                                       b"no tab at all\n"
                                       b"\n"
                                       b"  \tbilling\n"
                                       b"caf\xe9 latte\tbilling\n"
                                       b"fine again\tshipping\n")
    read = rows_of(path)
    assert [r.where for r in read.rows] == [f"{path}:1", f"{path}:5", f"{path}:7"]  # line 5: empty text, caught later
    assert set(read.bad) == {f"{path}:2", f"{path}:3", f"{path}:6"}
    assert "found 3" in read.bad[f"{path}:2"] and "found 1" in read.bad[f"{path}:3"]
    assert "not UTF-8" in read.bad[f"{path}:6"] and "0xe9" in read.bad[f"{path}:6"]
    assert read.blank == 1


def test_bad_jsonl_lines_are_named(tmp_path):
    path = write(tmp_path / "bad.jsonl", '{"text": "ok", "label": "a"}\n'
                                         '{"text": "broken", \n'
                                         '["a", "list"]\n'
                                         '{"label": "a"}\n'
                                         '{"text": 5, "label": "a"}\n'
                                         '{"text": "two", "labels": ["a", "b"]}\n'
                                         '{"text": "odd label", "label": {"x": 1}}\n'
                                         '{"sentence": "other field names", "labels": ["b"]}\n')
    read = rows_of(path)
    assert [(r.where, r.text, r.labels) for r in read.rows] == [(f"{path}:1", "ok", ("a",)),
                                                                (f"{path}:8", "other field names", ("b",))]
    reasons = {int(k.rsplit(":", 1)[1]): v for k, v in read.bad.items()}
    assert set(reasons) == {2, 3, 4, 5, 6, 7}
    assert "not JSON" in reasons[2] and "not a JSON object" in reasons[3] and "no 'text'" in reasons[4]
    assert "not a string" in reasons[5] and "multi_label is false" in reasons[6] and "name or an integer" in reasons[7]


def test_bad_csv_rows_are_named(tmp_path):
    path = write(tmp_path / "bad.csv", b"text,label\nfine,a\ntoo,many,fields\n\"multi\nline text\",b\nbad \xff byte,a\nlast,b\n")
    read = rows_of(path)
    assert [(r.where, r.text) for r in read.rows] == [(f"{path}:2", "fine"), (f"{path}:4", "multi\nline text"),
                                                      (f"{path}:7", "last")]
    assert "found 3" in read.bad[f"{path}:3"] and "not UTF-8" in read.bad[f"{path}:6"]


def test_the_format_comes_from_the_extension_or_data_format(tmp_path):
    path = write(tmp_path / "data.dat", "hello\tgreet\n")
    with pytest.raises(SpecError, match="data.format"):
        rows_of(path)
    assert rows_of(path, "data.format=tsv").rows[0].labels == ("greet",)
    with pytest.raises(DataError, match="does not exist"):
        rows_of(tmp_path / "missing.tsv")


def test_labels_file_names_integer_labels_and_refuses_indices_out_of_range(tmp_path, tokenizer):
    labels = write(tmp_path / "labels.txt", "negative\npositive\n\n")
    train = write(tmp_path / "train.tsv", "sentence\tlabel\ngreat film\t1\nawful film\t0\nmeh\t2\nbad plot\tnegative\n"
                                          "fine\t-1\n")
    val = write(tmp_path / "val.tsv", "loved it\t1\nhated it\t0\n")
    data = TextClassificationData(spec(f"data.train_file={train}", f"data.val_file={val}",
                                       f"data.labels_file={labels}"), tokenizer)
    assert data.classes == ["negative", "positive"]
    assert [(e.text, e.target) for e in data.train_items] == [("great film", 1), ("awful film", 0), ("bad plot", 0)]
    assert set(data.skipped) == {f"{train}:4", f"{train}:6"}
    assert "label index 2 is out of range" in data.skipped[f"{train}:4"] and "0-1" in data.skipped[f"{train}:4"]
    assert read_label_names(labels) == ["negative", "positive"]
    write(tmp_path / "twice.txt", "a\nb\na\n")
    with pytest.raises(DataError, match="twice"):
        read_label_names(tmp_path / "twice.txt")


def test_unknown_labels_and_empty_sentences_are_skipped_by_name(tmp_path, tokenizer):
    train = write(tmp_path / "train.tsv", "a sentence\tbilling\nanother\tshipping\n \tbilling\nno label here\t\n")
    val = write(tmp_path / "val.tsv", "what about this\trefunds\nand this\tbilling\n\x00\x01\tbilling\n")
    data = TextClassificationData(spec(f"data.train_file={train}", f"data.val_file={val}"), tokenizer)
    assert data.classes == ["billing", "shipping"]
    assert data.skipped[f"{train}:3"] == "empty sentence" and data.skipped[f"{train}:4"] == "no label"
    assert "unknown label 'refunds'" in data.skipped[f"{val}:1"] and "data.train_file" in data.skipped[f"{val}:1"]
    data.scan("val")  # a sentence with no token at all is found when the split is first checked
    assert "no token" in data.skipped[f"{val}:3"]
    assert [e.text for e in data.val_items] == ["and this"]


def test_explicit_labels_fix_the_order_and_refuse_others(tmp_path, tokenizer):
    train = write(tmp_path / "train.tsv", "x y\tb\nz w\ta\nq r\tc\n")
    data = TextClassificationData(spec(f"data.train_file={train}", f"data.val_file={train}", "data.labels=[b, a]"),
                                  tokenizer)
    assert data.classes == ["b", "a"] and [e.target for e in data.train_items] == [0, 1]
    assert "unknown label 'c'" in data.skipped[f"{train}:3"] and "data.labels" in data.skipped[f"{train}:3"]


def test_without_a_val_file_a_stratified_fraction_is_held_out_reproducibly(tmp_path, tokenizer):
    lines = [f"sentence number {i}\t{'ab'[i % 2]}\n" for i in range(40)]
    train = write(tmp_path / "train.tsv", "".join(lines))
    make = lambda seed: TextClassificationData(spec(f"data.train_file={train}", "data.val_split=0.25",
                                                    f"train.seed={seed}"), tokenizer)
    first, again, other = make(1), make(1), make(2)
    assert len(first.val_items) == 10 and len(first.train_items) == 30
    assert sorted(e.target for e in first.val_items) == [0] * 5 + [1] * 5  # stratified by label
    assert [e.where for e in first.val_items] == [e.where for e in again.val_items]
    assert [e.where for e in first.val_items] != [e.where for e in other.val_items]
    assert not {e.where for e in first.val_items} & {e.where for e in first.train_items}


def test_multi_label_rows(tmp_path, tokenizer):
    train = write(tmp_path / "train.tsv", "late and broken\tshipping, technical\nrefund\tbilling\nthanks\t\n")
    jsonl = write(tmp_path / "val.jsonl", json.dumps({"text": "charged for a broken phone", "labels": ["billing",
                                                      "technical"]}) + "\n" + json.dumps({"text": "x", "labels": ["nope"]}) + "\n")
    data = TextClassificationData(spec(f"data.train_file={train}", f"data.val_file={jsonl}", "model.multi_label=true"),
                                  tokenizer)
    assert data.classes == ["billing", "shipping", "technical"]
    assert [e.target for e in data.train_items] == [(0.0, 1.0, 1.0), (1.0, 0.0, 0.0), (0.0, 0.0, 0.0)]
    assert [e.target for e in data.val_items] == [(1.0, 0.0, 1.0)]
    assert "unknown label 'nope'" in data.skipped[f"{jsonl}:2"]


def test_a_single_label_classifier_needs_two_labels(tmp_path, tokenizer):
    train = write(tmp_path / "train.tsv", "one\tonly\ntwo\tonly\n")
    with pytest.raises(DataError, match="at least two"):
        TextClassificationData(spec(f"data.train_file={train}"), tokenizer)


def test_a_label_no_class_can_be_named_skips_its_row_in_every_format(tmp_path, tokenizer):
    """Control characters in a label (data.names: the check every class-name reader makes) skip the row, named."""
    tsv = write(tmp_path / "t.tsv", "fine\tbilling\nescape\tbil\x1bling\n")
    csv = write(tmp_path / "t.csv", 'text,label\nfine,billing\nnewline,"bil\nling"\n')
    jsonl = write(tmp_path / "t.jsonl", '{"text": "fine", "label": "billing"}\n{"text": "sep", "label": "bil\\u2028ling"}\n')
    for path, line in ((tsv, 2), (csv, 3), (jsonl, 2)):
        read = rows_of(path)
        assert [r.text for r in read.rows] == ["fine"]
        assert list(read.bad) == [f"{path}:{line}"] and "control character" in read.bad[f"{path}:{line}"], read.bad
    data = TextClassificationData(spec(f"data.train_file={tsv}", f"data.val_file={tsv}", "data.labels=[billing, x]"),
                                  tokenizer)
    assert data.classes == ["billing", "x"] and "control character" in data.skipped[f"{tsv}:2"]


def test_a_label_list_with_a_control_character_is_refused_naming_where(tmp_path, tokenizer):
    train = write(tmp_path / "train.tsv", "a\tbilling\nb\tshipping\n")
    labels = write(tmp_path / "labels.txt", "billing\nship\x1bping\n")
    with pytest.raises(DataError, match=rf"data\.labels_file: {re.escape(str(labels))}:2: .*control character") as refused:
        TextClassificationData(spec(f"data.train_file={train}", f"data.labels_file={labels}"), tokenizer)
    assert "\n" not in str(refused.value)
    with pytest.raises(SpecError, match=r"data\.labels\[1\] .*control character"):  # YAML's \e is the escape character
        TextClassificationData(spec(f"data.train_file={train}", 'data.labels=[billing, "ship\\eping"]'), tokenizer)
