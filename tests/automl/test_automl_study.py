"""`tkit <task> automl` in one process: the study's files, pruning, failing trials, and the checks made before
any trial runs."""
from __future__ import annotations

import json

import pytest
import yaml

from automl_helpers import LR_SPACE, TINY, data_args, read_trials, tkit
from transferkit.automl.config import check_search_space, spec_baseline, spec_schema
from transferkit.errors import SpecError
from transferkit.tasks import get_task, task_names


def test_random_search_of_four_trials_writes_the_study_files(digits, tmp_path, capsys):
    results = tmp_path / "search"
    space = ("automl.search_space={train.learning_rate: {float: [0.001, 0.05], log: true}, "
             "train.batch_size: {choice: [4, 8]}, model.dropout: {float: [0.0, 0.5]}}")
    assert tkit("classification", "automl", "-r", results, *data_args(digits), *TINY, space,
                "automl.max_trials=4", "automl.algorithm=random") == 0
    rows = read_trials(results)
    assert list(rows[0]) == ["number", "state", "metric", "train.learning_rate", "train.batch_size", "model.dropout",
                             "seconds", "reason"]
    assert [r["number"] for r in rows] == ["0", "1", "2", "3"]
    assert all(r["state"] == "COMPLETE" and 0 <= float(r["metric"]) <= 1 and float(r["seconds"]) > 0 for r in rows)
    assert all(0.001 <= float(r["train.learning_rate"]) <= 0.05 and r["train.batch_size"] in ("4", "8") for r in rows)
    for r in rows:  # each trial is an ordinary training run with its values
        trial = results / f"trial_{int(r['number']):04d}"
        written = yaml.safe_load((trial / "spec.yaml").read_text())
        assert written["train"]["batch_size"] == int(r["train.batch_size"])
        assert json.loads((trial / "metrics.json").read_text())["epochs_completed"] == 1
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["states"]["COMPLETE"] == 4 and metrics["metric"] == "val/acc"
    assert metrics["direction"] == "maximize" and metrics["trials_per_hour"] > 0
    best = metrics["best"]
    assert best["value"] == max(float(r["metric"]) for r in rows) or abs(
        best["value"] - max(float(r["metric"]) for r in rows)) < 1e-6
    best_spec = yaml.safe_load((results / "best_spec.yaml").read_text())
    assert best_spec["train"]["learning_rate"] == pytest.approx(best["params"]["train.learning_rate"])
    assert best_spec["train"]["batch_size"] == best["params"]["train.batch_size"]
    for name in ("optimization_history.png", "param_importances.png", "parallel_coordinates.png", "study.db"):
        assert (results / name).stat().st_size > 0, name
    assert list((results / "tensorboard").glob("events.out.tfevents.*"))
    log_text = (results / "log.txt").read_text()
    assert "automl trials (val/acc, maximize)" in log_text and "train.batch_size" in log_text
    # best_spec.yaml is ready for `train`
    assert tkit("classification", "train", "-e", results / "best_spec.yaml", "-r", tmp_path / "best") == 0
    assert json.loads((tmp_path / "best" / "metrics.json").read_text())["epochs_completed"] == 1


def test_the_pruner_stops_a_clearly_worse_trial(digits, tmp_path, probe_task):
    results = tmp_path / "pruned"
    assert tkit(probe_task, "automl", "-r", results, *data_args(digits), *TINY, "train.epochs=3", LR_SPACE,
                "automl.metric=val/score", "automl.direction=maximize", "automl.max_trials=2",
                "automl.pruner=median", "automl.startup_trials=1",
                "automl.enqueue=[{train.learning_rate: 0.04}, {train.learning_rate: 0.001}]") == 0
    good, bad = read_trials(results)
    assert good["state"] == "COMPLETE" and float(good["metric"]) == pytest.approx(4.0)
    assert bad["state"] == "PRUNED" and bad["reason"] == "pruned after epoch 1" and bad["metric"] == ""
    epochs = [len((results / f"trial_000{n}" / "status.json").read_text().splitlines()) for n in (0, 1)]
    assert epochs == [3, 1]  # the worse trial stopped after its first epoch
    assert json.loads((results / "metrics.json").read_text())["states"]["PRUNED"] == 1


def test_max_epochs_plans_every_trial_for_that_many_epochs_and_is_hyperbands_resource(digits, tmp_path, probe_task):
    from transferkit.automl.study import make_pruner

    results = tmp_path / "longer"
    assert tkit(probe_task, "automl", "-r", results, *data_args(digits), *TINY, "train.epochs=1", LR_SPACE,
                "automl.metric=val/score", "automl.direction=maximize", "automl.max_trials=1", "automl.pruner=none",
                "automl.max_epochs=3") == 0
    assert len((results / "trial_0000" / "status.json").read_text().splitlines()) == 3
    assert yaml.safe_load((results / "trial_0000" / "spec.yaml").read_text())["train"]["epochs"] == 3
    spec = spec_schema(get_task("classification"))(train={"epochs": 2}, automl={"algorithm": "hyperband",
                                                                               "max_epochs": 27})
    assert make_pruner(spec.automl, spec)._max_resource == 27
    assert make_pruner(spec.automl.model_copy(update={"max_epochs": None}), spec)._max_resource == 2


def test_max_epochs_and_searched_epochs_are_refused_together(digits, tmp_path, capsys):
    code = tkit("classification", "automl", "-r", tmp_path / "r", *data_args(digits), *TINY, "automl.max_epochs=9",
                "automl.search_space={train.epochs: {int: [1, 3]}}")
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "automl.max_epochs" in err and "train.epochs" in err and "Traceback" not in err


def test_a_trial_that_raises_is_recorded_failed_and_the_study_goes_on(digits, tmp_path, probe_task, capsys):
    results = tmp_path / "failing"
    space = "automl.search_space={train.learning_rate: {choice: [0.9, 0.01]}, model.backbone: {choice: [no_such_net, 'timm:test_resnet']}}"
    assert tkit(probe_task, "automl", "-r", results, *data_args(digits), *TINY, space,
                "automl.metric=val/score", "automl.direction=maximize", "automl.max_trials=3",
                "automl.enqueue=[{train.learning_rate: 0.9, model.backbone: 'timm:test_resnet'}, "
                "{train.learning_rate: 0.01, model.backbone: no_such_net}, "
                "{train.learning_rate: 0.01, model.backbone: 'timm:test_resnet'}]") == 0
    oom, unknown, good = read_trials(results)
    assert oom["state"] == "FAIL" and oom["reason"].startswith("CUDA out of memory")
    assert "Traceback" in (results / "trial_0000" / "error.txt").read_text()  # not a user error: traceback kept
    assert unknown["state"] == "FAIL" and "no_such_net" in unknown["reason"] and "\n" not in unknown["reason"]
    assert good["state"] == "COMPLETE"
    assert yaml.safe_load((results / "best_spec.yaml").read_text())["model"]["backbone"] == "timm:test_resnet"
    assert "automl trial 0 FAILED: CUDA out of memory" in (results / "log.txt").read_text()


@pytest.mark.parametrize(("space", "expected"), [
    ("{train.learning_rte: {float: [0.001, 0.1]}}", "unknown key 'train.learning_rte' (did you mean 'train.learning_rate'?)"),
    ("{train.momentum: {float: [0.5, 1.5]}}", "automl.search_space.train.momentum: the value 1.5 is refused"),
    ("{train.optimizer: {choice: [sgd, adagrad]}}", "automl.search_space.train.optimizer: the value 'adagrad' is refused"),
    ("{train.learning_rate: {float: [0.1, 0.001]}}", "min <= max"),
    ("{train.learning_rate: {float: [0, 0.1], log: true}}", "log: true needs min > 0"),
    ("{train.epochs: {int: [1, 3], choice: [2]}}", "exactly one of"),
    ("{data: {float: [0, 1]}}", "unknown key 'data'"),
])
def test_a_bad_search_space_is_refused_before_any_trial(digits, tmp_path, capsys, space, expected):
    results = tmp_path / "bad"
    code = tkit("classification", "automl", "-r", results, *data_args(digits), *TINY, f"automl.search_space={space}")
    err = capsys.readouterr().err
    assert code == 2 and expected in " ".join(err.split()) and "Traceback" not in err
    assert not list(results.glob("trial_*"))


def test_a_metric_of_its_own_needs_a_direction(digits, tmp_path, capsys):
    code = tkit("classification", "automl", "-r", tmp_path / "r", *data_args(digits), *TINY, LR_SPACE,
                "automl.metric=val/loss")
    assert code == 2 and "automl.direction=minimize" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("task", task_names())
def test_every_task_ships_a_default_search_space_its_spec_accepts(task):
    t = get_task(task)
    schema = spec_schema(t)
    space = schema().automl.search_space
    assert "train.learning_rate" in space
    check_search_space(schema, {}, space, [])  # every bound of every dimension is a value the spec takes


def test_a_search_space_on_a_task_class_becomes_its_default():
    class Tuned(type(get_task("classification"))):
        name = "automl_tuned"
        automl_search_space = {"train.epochs": {"int": [1, 4]}}

    assert spec_schema(Tuned()).model_validate({}).automl.search_space == {"train.epochs": {"int": [1, 4]}}
    with pytest.raises(SpecError, match="automl.enqueue\\[0\\].train.epochs: 9 is outside"):
        check_search_space(spec_schema(Tuned()), {}, {"train.epochs": {"int": [1, 4]}}, [{"train.epochs": 9}])


def test_max_minutes_stops_the_study_from_starting_trials(digits, tmp_path):
    results = tmp_path / "timed"
    assert tkit("classification", "automl", "-r", results, *data_args(digits), *TINY, LR_SPACE,
                "automl.max_minutes=0.00001") == 0
    assert [r["state"] for r in read_trials(results)] == ["WAITING"]  # the spec's own values, queued for a resume
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["counted_trials"] == 0 and metrics["states"]["WAITING"] == 1 and metrics["best"] == {}
    assert not (results / "best_spec.yaml").exists()
    assert "automl.max_minutes=1e-05 reached: no more trials" in (results / "log.txt").read_text()


def test_the_default_search_space_is_centred_on_the_users_own_spec(digits, tmp_path):
    results = tmp_path / "centred"
    assert tkit("classification", "automl", "-r", results, *data_args(digits), *TINY, "train.learning_rate=0.02",
                "train.batch_size=12", "automl.max_minutes=0.00001") == 0
    space = yaml.safe_load((results / "spec.yaml").read_text())["automl"]["search_space"]
    assert space["train.learning_rate"] == {"float": [0.002, 0.06], "log": True}
    assert space["train.batch_size"] == {"choice": [6, 12]}
    default = get_task("classification").default_search_space()
    assert default["train.learning_rate"] != space["train.learning_rate"]  # not the default spec's
    # a space the user names is searched as given
    named = tmp_path / "named"
    assert tkit("classification", "automl", "-r", named, *data_args(digits), *TINY, "train.batch_size=12", LR_SPACE,
                "automl.max_minutes=0.00001") == 0
    assert "train.batch_size" not in yaml.safe_load((named / "spec.yaml").read_text())["automl"]["search_space"]


def test_the_specs_own_values_run_as_a_trial_so_the_best_is_never_below_them(digits, tmp_path):
    results = tmp_path / "baseline"
    assert tkit("classification", "automl", "-r", results, *data_args(digits), *TINY, "train.learning_rate=0.02",
                LR_SPACE, "automl.max_trials=2", "automl.algorithm=random") == 0
    first, second = (float(r["train.learning_rate"]) for r in read_trials(results))
    assert first == pytest.approx(0.02) and second != pytest.approx(0.02)
    off = tmp_path / "no_baseline"
    assert tkit("classification", "automl", "-r", off, *data_args(digits), *TINY, "train.learning_rate=0.02",
                LR_SPACE, "automl.max_trials=1", "automl.algorithm=random", "automl.baseline=false") == 0
    assert float(read_trials(off)[0]["train.learning_rate"]) != pytest.approx(0.02)


def test_the_baseline_takes_only_the_spec_values_inside_the_search_space():
    schema = spec_schema(get_task("classification"))
    spec = schema.model_validate({"train": {"learning_rate": 0.5, "batch_size": 12}})
    space = {"train.learning_rate": {"float": [0.001, 0.05], "log": True}, "train.batch_size": {"choice": [6, 12]},
             "model.dropout": {"float": [0.0, 0.5]}, "train.epochs": {"int": [20, 30]},
             "data.augmentation.random_resized_crop_scale": {"choice": [[0.3, 1.0], [0.5, 1.0]]}}
    assert spec_baseline(spec, space) == {"train.batch_size": 12, "model.dropout": 0.2,
                                          "data.augmentation.random_resized_crop_scale": [0.5, 1.0]}


def test_trial_folders_of_another_study_are_not_overwritten(digits, tmp_path, capsys):
    results = tmp_path / "other"
    (results / "trial_0000").mkdir(parents=True)
    code = tkit("classification", "automl", "-r", results, *data_args(digits), *TINY, LR_SPACE, "automl.max_trials=1")
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "holds trial_0000 (and 0 more trial folders) that study 'classification'" in err
