"""Shared fixtures. Every test runs offline: no hub look-ups, a private TRANSFERKIT_HOME."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _private_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_HOME", str(tmp_path_factory.getbasetemp() / "tkit_home"))


@pytest.fixture(scope="session")
def digits_demo(tmp_path_factory):
    """A factory for the `digits` demo folder (train/ and val/): `digits_demo(per_class=2, val_per_class=1,
    size=32)`; each combination of sizes is built once per session and shared by the tests that ask for it."""
    from transferkit.data.demo import build_demo

    built = {}

    def make(per_class: int, val_per_class: int, size: int, seed: int = 0):
        key = (per_class, val_per_class, size, seed)
        if key not in built:
            root = tmp_path_factory.mktemp(f"digits_{per_class}_{val_per_class}_{size}px")
            build_demo("digits", root, seed=seed, per_class=per_class, val_per_class=val_per_class, size=size)
            built[key] = root
        return built[key]

    return make
