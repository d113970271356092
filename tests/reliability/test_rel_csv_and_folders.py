"""Bad CSV label lists and bad dataset folders: a clear error naming the file, line, class or key,
or a run that counts every row it could not use."""
from __future__ import annotations

import shutil

import pytest

from rel_helpers import FAST, read_json


def _csv(path, rows, encoding="utf-8"):
    path.write_bytes(("\n".join(rows) + "\n").encode(encoding))
    return path


def _absolute(digits, split):
    """The demo's `path,label` rows for `split`, with absolute paths."""
    header, *rows = (digits / f"{split}.csv").read_text(encoding="utf-8").splitlines()
    return [header] + [f"{digits / row.rsplit(',', 1)[0]},{row.rsplit(',', 1)[1]}" for row in rows]


# -- CSV lists ------------------------------------------------------------------------------------

def test_csv_rows_with_a_missing_file_or_three_fields_are_skipped_and_counted(digits, tmp_path, tkit):
    rows = _absolute(digits, "train")
    bad_rows = [f"{digits / 'train' / '0' / 'not_there.png'},0", f"{rows[1]},extra"]  # 3 fields
    train_csv = _csv(tmp_path / "train.csv", rows + bad_rows)
    result = tkit("train", "-r", tmp_path / "run", f"data.train_csv={train_csv}",
                  f"data.val_csv={digits / 'val.csv'}", *FAST)
    assert result.rc == 0, result.err
    metrics = read_json(tmp_path / "run" / "metrics.json")
    files = metrics["skipped_images"]["files"]
    assert metrics["skipped_images"]["count"] == 2
    missing_line, three_fields_line = len(rows) + 1, len(rows) + 2
    assert "not_there.png" in files[f"{train_csv}:{missing_line}"]
    assert "2 fields" in files[f"{train_csv}:{three_fields_line}"]
    assert metrics["train_images"] == len(rows) - 1


def test_unknown_label_in_val_csv_names_the_line_and_the_label(digits, tmp_path, tkit):
    header, first, *_ = _absolute(digits, "val")
    val_csv = _csv(tmp_path / "val.csv", [header, f"{first.rsplit(',', 1)[0]},zebra"])
    result = tkit("train", "-r", tmp_path / "run", f"data.train_dir={digits / 'train'}", f"data.val_csv={val_csv}",
                  *FAST)
    result.assert_user_error("data.val_csv", f"{val_csv}:2", "zebra")


def test_csv_that_is_not_utf8_is_refused_with_a_fix(tmp_path, tkit):
    train_csv = _csv(tmp_path / "latin1.csv", ["path,label", "café_été.png,chat"], encoding="latin-1")
    result = tkit("train", "-r", tmp_path / "run", f"data.train_csv={train_csv}", *FAST)
    result.assert_user_error("data.train_csv", str(train_csv), "UTF-8")


def test_csv_without_header_names_line_one_and_the_expected_header(digits, tmp_path, tkit):
    train_csv = _csv(tmp_path / "noheader.csv", _absolute(digits, "train")[1:])
    result = tkit("train", "-r", tmp_path / "run", f"data.train_csv={train_csv}", *FAST)
    result.assert_user_error("data.train_csv", f"{train_csv}:1", "path,label")


# -- folders --------------------------------------------------------------------------------------

def test_empty_class_folder_in_train_names_the_class(digits, copy_split, tmp_path, tkit):
    train = copy_split("train")
    (train / "7").mkdir()
    result = tkit("train", "-r", tmp_path / "run", f"data.train_dir={train}", f"data.val_dir={digits / 'val'}", *FAST)
    result.assert_user_error("data.train_dir", "'7'")


def test_class_folder_holding_only_bad_images_names_the_class(digits, copy_split, tmp_path, tkit):
    train = copy_split("train")
    (train / "8").mkdir()
    (train / "8" / "empty.png").write_bytes(b"")
    result = tkit("train", "-r", tmp_path / "run", f"data.train_dir={train}", f"data.val_dir={digits / 'val'}", *FAST)
    result.assert_user_error("data.train_dir", "'8'")


def test_val_class_absent_from_train_names_the_class(digits, copy_split, tmp_path, tkit):
    val = copy_split("val")
    shutil.copytree(val / "1", val / "9")
    result = tkit("train", "-r", tmp_path / "run", f"data.train_dir={digits / 'train'}", f"data.val_dir={val}", *FAST)
    result.assert_user_error("data.val_dir", "'9'")


def test_train_dir_that_does_not_exist_names_the_key_and_path(digits, tmp_path, tkit):
    missing = tmp_path / "no_such_folder"
    result = tkit("train", "-r", tmp_path / "run", f"data.train_dir={missing}", f"data.val_dir={digits / 'val'}", *FAST)
    result.assert_user_error("data.train_dir", str(missing))


def test_no_data_keys_at_all_names_train_dir(tmp_path, tkit):
    result = tkit("train", "-r", tmp_path / "run", *FAST)
    result.assert_user_error("data.train_dir")


def test_train_without_train_dir_says_the_key_is_not_set(digits, tmp_path, tkit):
    result = tkit("train", "-r", tmp_path / "run", f"data.val_dir={digits / 'val'}", *FAST)
    result.assert_user_error("data.train_dir", "not set")


def test_no_val_data_and_val_split_zero_names_the_keys(digits, tmp_path, tkit):
    result = tkit("train", "-r", tmp_path / "run", f"data.train_dir={digits / 'train'}", "data.val_split=0", *FAST)
    result.assert_user_error("data.val_dir", "data.val_split")


def test_val_split_that_leaves_no_validation_images_is_refused(digits, tmp_path, tkit):
    train = tmp_path / "train"
    for c in ("0", "1", "2"):
        (train / c).mkdir(parents=True)
        shutil.copy(sorted((digits / "train" / c).iterdir())[0], train / c)
    result = tkit("train", "-r", tmp_path / "run", f"data.train_dir={train}", "data.val_split=0.2", *FAST)
    result.assert_user_error("data.val_split", "data.val_dir")
