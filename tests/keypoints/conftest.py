"""Fixtures of the keypoints task tests: one tiny COCO keypoints set and one model trained on it, per session."""
from __future__ import annotations

from pathlib import Path

import pytest

from kp_task_helpers import FAST, data_args, make_set, tkit


@pytest.fixture(scope="session")
def kpset(tmp_path_factory) -> Path:
    """8 train / 4 val images, 1-2 figures each (12 / 6 objects)."""
    return make_set(tmp_path_factory.mktemp("kpset"))


@pytest.fixture(scope="session")
def kp_trained(kpset, tmp_path_factory) -> Path:
    """A keypoints run trained 2 epochs on `kpset` (random init, 64 x 64 crops)."""
    run = tmp_path_factory.mktemp("kp") / "train"
    assert tkit("keypoints", "train", "-r", run, *data_args(kpset), *FAST) == 0
    return run
