"""Fixtures of the automl tests: tiny digits and the probe task (automl_helpers.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from automl_helpers import ProbeTask
from transferkit.data.demo import build_demo
from transferkit.tasks import register_task, task_names


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("automl_digits")
    build_demo("digits", root, seed=0, per_class=2, val_per_class=1, size=32)
    return root


@pytest.fixture(scope="module")
def probe_task():
    """The probe task in the task table while the module's tests run (other tests that list tasks never see it)."""
    from transferkit import tasks

    if "automl_probe" not in task_names():
        register_task(ProbeTask())
    yield "automl_probe"
    tasks._registered.pop("automl_probe", None)
