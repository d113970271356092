"""One results folder, one verb: `evaluate` or `inference` pointed (-r) at a training folder is refused
before it replaces the training's metrics.json and spec.yaml, unless --overwrite says so; a verb may
write into its own folder again (re-evaluating is normal use), and training resumes in its own."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from transferkit import api
from transferkit.engine.run import LOCK_NAME
from transferkit.errors import SpecError

from rel_helpers import FAST, read_json


@pytest.fixture
def train_run(trained, tmp_path) -> Path:
    """A private copy of a finished training run."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


@pytest.fixture
def model_args(trained, digits) -> list:
    return ["-m", trained / "best.ckpt", f"data.val_dir={digits / 'val'}", f"inference.images={digits / 'val' / '0'}",
            *FAST]


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("verb", ["evaluate", "inference"])
def test_a_verb_refuses_a_training_folder_and_leaves_it_untouched(train_run, model_args, tkit, verb):
    before = _digests(train_run)
    result = tkit(verb, "-r", train_run, *model_args)
    message = result.assert_user_error(str(train_run), "tkit classification train", f"tkit classification {verb}",
                                       "-r", "--overwrite")
    assert "metrics.json" in message or "best.ckpt" in message  # what it holds, named
    assert _digests(train_run) == before  # not even log.txt grew
    assert not (train_run / LOCK_NAME).exists()


def test_a_training_folder_from_before_the_record_is_recognised_by_its_files(train_run, model_args, tkit):
    for hidden in train_run.glob(".*"):  # the record of the verb: an earlier transferkit wrote none
        hidden.unlink()
    before = read_json(train_run / "metrics.json")
    tkit("evaluate", "-r", train_run, *model_args).assert_user_error(str(train_run), "train", "--overwrite")
    assert read_json(train_run / "metrics.json") == before


def test_overwrite_lets_evaluate_write_into_the_training_folder(train_run, model_args, tkit):
    result = tkit("evaluate", "-r", train_run, "--overwrite", *model_args)
    assert result.rc == 0, result.err
    assert "top1" in read_json(train_run / "metrics.json")
    assert (train_run / "best.ckpt").is_file()


def test_evaluating_again_into_the_same_folder_is_allowed(model_args, tmp_path, tkit):
    folder = tmp_path / "eval"
    for _ in range(2):
        result = tkit("evaluate", "-r", folder, *model_args)
        assert result.rc == 0, result.err
    assert "top1" in read_json(folder / "metrics.json")


def test_training_refuses_an_evaluation_folder(model_args, digits, tmp_path, tkit):
    folder = tmp_path / "eval"
    assert tkit("evaluate", "-r", folder, *model_args).rc == 0
    before = _digests(folder)
    result = tkit("train", "-r", folder, f"data.train_dir={digits / 'train'}", f"data.val_dir={digits / 'val'}", *FAST)
    result.assert_user_error(str(folder), "tkit classification evaluate", "tkit classification train", "--overwrite")
    assert _digests(folder) == before


def test_inference_refuses_an_evaluation_folder(model_args, tmp_path, tkit):
    folder = tmp_path / "eval"
    assert tkit("evaluate", "-r", folder, *model_args).rc == 0
    tkit("inference", "-r", folder, *model_args).assert_user_error("tkit classification evaluate", "--overwrite")
    assert not (folder / "predictions.csv").exists()


def test_a_refused_run_that_never_started_keeps_the_folder_resumable(train_run, digits, model_args, tkit):
    """A verb that fails before writing anything does not claim the folder: training still resumes there."""
    result = tkit("evaluate", "-r", train_run, "--overwrite", "-m", train_run / "missing.ckpt",
                  f"data.val_dir={digits / 'val'}", *FAST)
    result.assert_user_error("missing.ckpt")
    again = tkit("evaluate", "-r", train_run, *model_args)
    again.assert_user_error("holds the results of `tkit classification train`")


def test_the_python_api_takes_overwrite(train_run, trained, digits):
    overrides = [f"data.val_dir={digits / 'val'}", *FAST]
    with pytest.raises(SpecError, match="overwrite=True"):
        api.evaluate("classification", None, train_run, overrides, model=trained / "best.ckpt")
    metrics = api.evaluate("classification", None, train_run, overrides, model=trained / "best.ckpt", overwrite=True)
    assert read_json(train_run / "metrics.json")["top1"] == metrics["top1"]
