"""Shared fixtures. Every test runs offline: no hub look-ups, a private TRANSFERKIT_HOME."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _private_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_HOME", str(tmp_path_factory.getbasetemp() / "tkit_home"))
