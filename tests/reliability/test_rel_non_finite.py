"""Non-finite numbers: refused in every float spec key; a training loss that becomes NaN or infinite stops
the run (never saved as best.ckpt); every JSON file the toolkit writes is strict JSON (null, never NaN).
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

pytest.register_assert_rewrite("rel_helpers")
from rel_helpers import FAST  # noqa: E402

from transferkit.errors import SpecError  # noqa: E402
from transferkit.io import atomic_write_json, json_text  # noqa: E402
from transferkit.spec import _section_type, load_spec  # noqa: E402
from transferkit.tasks import get_task, task_names  # noqa: E402


def strict_loads(text: str) -> Any:
    """json.loads that refuses NaN and Infinity, as JavaScript's JSON.parse and other strict parsers do."""
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


# -- the spec --------------------------------------------------------------------------------------

def float_keys(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, how many list levels hold its floats, or "dict" for {name: float}) for every key of a schema
    that holds floats."""
    found = []
    for name, field in model.model_fields.items():
        sub = _section_type(field.annotation)
        if sub is not None:
            found += float_keys(sub, f"{prefix}{name}.")
            continue
        shown = repr(field.annotation)
        if "float" in shown.lower():
            depth = "dict" if shown.startswith("dict[") else shown.count("list[") + shown.count("tuple[")
            found.append((prefix + name, depth))
    return found


def bad_value(text: str, depth: int | str) -> str:
    if depth == "dict":  # {name: float}, e.g. per-label thresholds
        return f"{{a: {text}}}"
    if depth == 0:
        return text
    if depth == 1:
        return f"[{text}, 1]"
    return f"[[{text}, 1]]"


@pytest.mark.parametrize("task", task_names())
def test_every_float_key_refuses_inf_minus_inf_and_overflowing_numbers(task):
    schema = get_task(task).spec_class
    keys = float_keys(schema)
    assert len(keys) >= 10, keys  # learning_rate, momentum, weight_decay, ... at least
    for key, depth in keys:
        for text in ("inf", "-inf", "1e309", ".inf", "nan"):
            with pytest.raises(SpecError) as caught:
                load_spec(schema, None, [f"{key}={bad_value(text, depth)}"])
            message = str(caught.value)
            assert key in message and "finite" in message, f"{key}={text}: {message}"
            assert len(message.splitlines()) == 1, message


@pytest.mark.parametrize("task", task_names())
def test_a_finite_learning_rate_beyond_float32_is_refused_at_the_spec_not_by_the_optimizer(task):
    # 1e300 is finite for Python but overflows the optimizer's float32 state (a traceback before the bound)
    schema = get_task(task).spec_class
    for key in ("train.learning_rate", "train.backbone_lr_scale"):
        with pytest.raises(SpecError) as caught:
            load_spec(schema, None, [f"{key}=1e300"])
        assert key in str(caught.value) and "less than or equal to 1e+38," in str(caught.value)
    assert load_spec(schema, None, ["train.learning_rate=1e38"]).train.learning_rate == 1e38


def test_an_infinite_learning_rate_in_a_spec_file_is_a_one_line_error(digits, tmp_path, tkit):
    spec = tmp_path / "spec.yaml"
    spec.write_text("train:\n  learning_rate: .inf\n")
    r = tkit("train", "-e", spec, "-r", tmp_path / "run", f"data.train_dir={digits / 'train'}",
             f"data.val_dir={digits / 'val'}", *FAST)
    r.assert_user_error("train.learning_rate", "finite")
    assert not (tmp_path / "run" / "best.ckpt").exists()


# -- training --------------------------------------------------------------------------------------

def train_args(digits, results, *extra: str) -> list:
    return ["train", "-r", results, f"data.train_dir={digits / 'train'}", f"data.val_dir={digits / 'val'}", *FAST,
            *extra]


def test_a_loss_that_becomes_nan_stops_training_naming_epoch_step_and_the_learning_rate(digits, tmp_path, tkit):
    results = tmp_path / "run"
    # batch 4: three steps per epoch; the first step's update is so large that the second step's loss is NaN
    r = tkit(*train_args(digits, results, "train.batch_size=4", "train.epochs=2", "train.learning_rate=1e30"))
    message = r.assert_user_error("training diverged", "epoch 1, step 2", "train.learning_rate")
    assert "nan" in message
    assert not (results / "best.ckpt").exists() and not (results / "last.ckpt").exists()


def test_weights_that_are_no_longer_finite_are_never_saved_as_best(digits, tmp_path, tkit):
    results = tmp_path / "run"
    # one step per epoch: its loss is finite, the update overflows the weights, and validation comes next
    r = tkit(*train_args(digits, results, "train.learning_rate=1e38"))  # float32 overflows above 3.4e38
    r.assert_user_error("training diverged", "weights", "epoch 1", "train.learning_rate")
    assert not (results / "best.ckpt").exists() and not (results / "last.ckpt").exists()


# -- strict JSON -----------------------------------------------------------------------------------

def test_json_the_toolkit_writes_has_null_where_a_number_is_not_finite(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_write_json(path, {"loss": float("nan"), "best": {"val/loss": float("inf")}, "curve": [1.0, -math.inf],
                             "np": np.float32("nan"), "count": np.int64(3), "ok": 0.5, "flag": True, "name": "x"})
    data = strict_loads(path.read_text())
    assert data == {"loss": None, "best": {"val/loss": None}, "curve": [1.0, None], "np": None, "count": 3,
                    "ok": 0.5, "flag": True, "name": "x"}
    assert strict_loads(json_text({"a": float("nan")}, indent=None)) == {"a": None}


def test_a_run_whose_validation_loss_is_nan_writes_strict_metrics_and_status(digits, tmp_path, tkit):
    """One step whose update leaves the weights finite but the outputs not: val/loss is NaN, the run ends."""
    results = tmp_path / "run"
    r = tkit(*train_args(digits, results, "train.learning_rate=1e30"))
    assert r.rc == 0, r.err
    metrics = strict_loads((results / "metrics.json").read_text())
    assert metrics["final"]["val/loss"] is None
    for line in (results / "status.json").read_text().splitlines():
        assert strict_loads(line)["val/loss"] is None


def test_on_a_gpu_the_losses_are_checked_together_and_the_first_bad_step_is_named():
    """The deferred check a GPU run uses (no wait for the GPU every step), driven with CPU tensors."""
    import torch

    from transferkit.engine.trainer import StopOnNonFinite
    from transferkit.errors import TrainingDiverged

    guard = StopOnNonFinite(learning_rate=0.5, every=10)
    guard.pending = [(0, 7, torch.tensor(1.0)), (0, 8, torch.tensor(float("inf"))), (1, 9, torch.tensor(float("nan")))]
    with pytest.raises(TrainingDiverged, match=r"became inf at epoch 1, step 8;.*train\.learning_rate \(now 0\.5; try"):
        guard.check(trainer=None)
    assert guard.pending == []
    guard.pending = [(0, 1, torch.tensor(2.0))]
    guard.check(trainer=None)  # finite: nothing happens
