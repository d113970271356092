"""Fixtures of the end-to-end CLI tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from transferkit.data.demo import build_demo


@pytest.fixture(scope="session")
def kitti(tmp_path_factory) -> Path:
    """8 train / 4 val 64x64 images of the digits 0, 1, 2 in KITTI format."""
    root = tmp_path_factory.mktemp("kitti")
    build_demo("kitti_digits", root, seed=0, num_train=8, num_val=4, width=64, height=64, classes="0,1,2")
    return root


@pytest.fixture(scope="session")
def digits(digits_demo) -> Path:
    """The `digits` demo, 4 train / 2 val images per class at 32 px: the end-to-end classification tests' set."""
    return digits_demo(per_class=4, val_per_class=2, size=32)


@pytest.fixture(scope="session")
def data(digits) -> list[str]:
    """The `data.*` overrides that point a spec at `digits`."""
    return [f"data.train_dir={digits / 'train'}", f"data.val_dir={digits / 'val'}"]
