"""Bad spec files, bad overrides and unusable paths: exit code 2 with the file:line:column or the
dotted key, and what to do about it."""
from __future__ import annotations

import pytest

from rel_helpers import FAST, read_json


@pytest.fixture
def data_args(digits):
    return [f"data.train_dir={digits / 'train'}", f"data.val_dir={digits / 'val'}"]


def _spec(tmp_path, text: str):
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_syntax_error_gives_line_and_column(tmp_path, tkit):
    spec = _spec(tmp_path, "train:\n  epochs: 3\n   batch_size: 8\n")
    result = tkit("train", "-e", spec, "-r", tmp_path / "run")
    result.assert_user_error(f"{spec}:3:", "YAML syntax error")


def test_tab_indentation_is_named_with_its_line(tmp_path, tkit):
    spec = _spec(tmp_path, "data:\n  image_size: 32\ntrain:\n\tepochs: 3\n")
    result = tkit("train", "-e", spec, "-r", tmp_path / "run")
    result.assert_user_error(f"{spec}:4:1", "tabs", "spaces")


def test_unknown_key_in_file_suggests_the_nearest_key(tmp_path, tkit):
    spec = _spec(tmp_path, "train:\n  epoch: 3\n")
    result = tkit("train", "-e", spec, "-r", tmp_path / "run")
    result.assert_user_error(str(spec), "'train.epoch'", "did you mean 'train.epochs'")


def test_unknown_override_suggests_the_nearest_key(tmp_path, tkit):
    result = tkit("train", "-r", tmp_path / "run", "train.batchsize=8")
    result.assert_user_error("'train.batchsize'", "did you mean 'train.batch_size'")


def test_wrong_type_names_the_dotted_key_and_the_value(tmp_path, tkit):
    spec = _spec(tmp_path, "train:\n  epochs: three\n")
    result = tkit("train", "-e", spec, "-r", tmp_path / "run")
    result.assert_user_error(str(spec), "train.epochs", "integer", "'three'")


@pytest.mark.parametrize("override", ["train.epochs=0", "train.epochs=-1", "train.batch_size=0", "train.batch_size=-4",
                                      "evaluation.batch_size=0"])
def test_zero_or_negative_counts_are_refused_with_the_key(tmp_path, tkit, override):
    key, value = override.split("=")
    result = tkit("train", "-r", tmp_path / "run", override)
    result.assert_user_error(key, "greater than 0", value)
    assert not (tmp_path / "run").exists()  # refused before the results folder is touched


def test_spec_file_that_does_not_exist_says_how_to_make_one(tmp_path, tkit):
    result = tkit("train", "-e", tmp_path / "nope.yaml", "-r", tmp_path / "run")
    result.assert_user_error(str(tmp_path / "nope.yaml"), "default_spec")


def test_spec_that_is_not_a_mapping_is_refused(digits, tmp_path, tkit):
    result = tkit("train", "-e", digits / "train.csv", "-r", tmp_path / "run")
    result.assert_user_error(str(digits / "train.csv"), "mapping")


@pytest.mark.parametrize("key", ["data.val_dir", "model.pruned"])
def test_path_key_that_does_not_exist_names_the_key_and_path(data_args, tmp_path, tkit, key):
    missing = tmp_path / "missing" / "thing"
    args = [a for a in data_args if not a.startswith(f"{key}=")]
    result = tkit("train", "-r", tmp_path / "run", *args, *FAST, f"{key}={missing}")
    result.assert_user_error(key, str(missing))


@pytest.mark.parametrize("name", ["weights.pth", "other_run.ckpt"])
def test_missing_pretrained_file_names_the_model_pretrained_key(data_args, tmp_path, tkit, name):
    missing = tmp_path / name
    result = tkit("train", "-r", tmp_path / "run", *data_args, *FAST, f"model.pretrained={missing}")
    result.assert_user_error("model.pretrained", str(missing))


def test_inference_images_that_do_not_exist_name_the_key(trained, tmp_path, tkit):
    missing = tmp_path / "photos"
    result = tkit("inference", "-r", tmp_path / "inf", "-m", trained / "best.ckpt", f"inference.images={missing}",
                  *FAST)
    result.assert_user_error("inference.images", str(missing))


def test_results_folder_under_a_regular_file_is_refused(data_args, tmp_path, tkit):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder", encoding="utf-8")
    result = tkit("train", "-r", blocker / "run", *data_args, *FAST)
    result.assert_user_error(str(blocker / "run"), "-r")


def test_results_folder_that_is_a_regular_file_is_refused(data_args, tmp_path, tkit):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder", encoding="utf-8")
    result = tkit("train", "-r", blocker, *data_args, *FAST)
    result.assert_user_error(str(blocker), "-r")
    assert blocker.read_text(encoding="utf-8") == "not a folder"


def test_batch_size_larger_than_the_dataset_still_trains(data_args, tmp_path, tkit):
    result = tkit("train", "-r", tmp_path / "run", *data_args, *FAST, "train.batch_size=64")
    assert result.rc == 0, result.err
    metrics = read_json(tmp_path / "run" / "metrics.json")
    assert metrics["train_images"] == 12
    assert metrics["global_step"] == 1  # one partial batch of 12, not dropped
    assert metrics["epochs_completed"] == 1
    assert (tmp_path / "run" / "best.ckpt").is_file()
