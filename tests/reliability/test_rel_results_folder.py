"""Two runs and one results folder: a second training is refused unless --overwrite or
train.resume=true, and a folder locked by a live process is refused."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from transferkit.engine.run import LOCK_NAME

from rel_helpers import FAST, read_json


@pytest.fixture
def data_args(digits):
    return [f"data.train_dir={digits / 'train'}", f"data.val_dir={digits / 'val'}"]


@pytest.fixture
def earlier_run(trained, tmp_path):
    """A private copy of a finished training run's results folder."""
    return shutil.copytree(trained, tmp_path / "run")


def test_second_training_into_the_same_folder_is_refused_and_keeps_the_first(earlier_run, data_args, tkit):
    before = (earlier_run / "best.ckpt").read_bytes()
    result = tkit("train", "-r", earlier_run, *data_args, *FAST)
    result.assert_user_error(str(earlier_run), "already holds a training run", "train.resume=true", "--overwrite")
    assert (earlier_run / "best.ckpt").read_bytes() == before
    assert not (earlier_run / LOCK_NAME).exists()


def test_overwrite_replaces_the_earlier_run(earlier_run, data_args, tkit):
    first_status = (earlier_run / "status.json").read_text(encoding="utf-8")
    result = tkit("train", "-r", earlier_run, "--overwrite", *data_args, *FAST, "train.seed=7")
    assert result.rc == 0, result.err
    assert read_json(earlier_run / "metrics.json")["epochs_completed"] == 1
    assert len((earlier_run / "status.json").read_text(encoding="utf-8").splitlines()) == 1
    assert (earlier_run / "status.json").read_text(encoding="utf-8") != first_status
    assert "seed: 7" in (earlier_run / "spec.yaml").read_text(encoding="utf-8")


def test_overwrite_with_a_bad_data_path_keeps_the_earlier_run(earlier_run, digits, tmp_path, tkit):
    typo = tmp_path / "trian"
    result = tkit("train", "-r", earlier_run, "--overwrite", f"data.train_dir={typo}",
                  f"data.val_dir={digits / 'val'}", *FAST)
    result.assert_user_error("data.train_dir", str(typo))
    for name in ("best.ckpt", "last.ckpt", "metrics.json"):
        assert (earlier_run / name).is_file(), f"{name} was deleted by a run that never started"


@pytest.mark.filterwarnings("ignore:The dirpath has changed")  # the run was copied to a new folder
def test_resume_continues_the_earlier_run(earlier_run, data_args, tkit):
    result = tkit("train", "-r", earlier_run, *data_args, *FAST, "train.resume=true", "train.epochs=2")
    assert result.rc == 0, result.err
    metrics = read_json(earlier_run / "metrics.json")
    assert metrics["epochs_completed"] == 2
    status = (earlier_run / "status.json").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["epoch"] for line in status] == [0, 1]


def test_resume_without_an_earlier_run_names_last_ckpt(data_args, tmp_path, tkit):
    result = tkit("train", "-r", tmp_path / "fresh", *data_args, *FAST, "train.resume=true")
    result.assert_user_error("train.resume=true", str(tmp_path / "fresh" / "last.ckpt"))


@pytest.mark.parametrize("verb", ["train", "evaluate"])
def test_folder_locked_by_a_live_process_is_refused(trained, data_args, tmp_path, tkit, verb):
    results = tmp_path / "busy"
    results.mkdir()
    lock = results / LOCK_NAME
    owner = f"{socket.gethostname()} {os.getpid()}"  # this very process: certainly alive
    lock.write_text(owner)
    model = ["-m", trained / "best.ckpt"] if verb == "evaluate" else []
    result = tkit(verb, "-r", results, *model, *data_args, *FAST)
    result.assert_user_error(str(results), "in use", str(os.getpid()))
    assert lock.read_text() == owner  # not stolen, not removed
    assert not (results / "metrics.json").exists()


def test_lock_left_by_a_dead_process_does_not_block(tmp_path, tkit, data_args):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    results = tmp_path / "stale"
    results.mkdir()
    (results / LOCK_NAME).write_text(f"{socket.gethostname()} {dead_pid}")
    missing = tmp_path / "no_model.ckpt"
    result = tkit("evaluate", "-r", results, "-m", missing, *data_args, *FAST)
    result.assert_user_error(str(missing))  # got past the lock to the next problem
    assert not (results / LOCK_NAME).exists()
