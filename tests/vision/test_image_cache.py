"""data.cache=ram|disk: decode each image once, and train on exactly the tensors an uncached run sees."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from transferkit.cli import main
from transferkit.errors import DataError
from transferkit.spec import load_spec
from transferkit.tasks import get_task
from transferkit.vision import cache as cache_module
from transferkit.vision.cache import ImageCache


def tkit(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["classification", *map(str, argv)])
    return rc, capsys.readouterr().err


@pytest.fixture
def folder(tmp_path) -> Path:
    """An ImageFolder tree: 2 classes x 6 images of different sizes (PNG and JPEG), one EXIF-rotated."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 3)):
        for c in ("a", "b"):
            d = tmp_path / split / c
            d.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 255, (20 + 3 * i, 28 + i, 3), dtype=np.uint8)
                image = Image.fromarray(pixels)
                if i % 2:
                    image.save(d / f"{i}.png")
                else:
                    exif = Image.Exif()
                    exif[0x0112] = 6 if i == 0 else 1  # the first one is stored sideways
                    image.save(d / f"{i}.jpg", quality=90, exif=exif)
    return tmp_path


def data_module(folder: Path, *overrides: str):
    task = get_task("classification")
    spec = load_spec(task.spec_class, None, [f"data.train_dir={folder / 'train'}", f"data.val_dir={folder / 'val'}",
                                            "data.image_size=32", "train.batch_size=4", "model.pretrained=false",
                                            *overrides])
    return task.build_data(spec)


def batches(data, split: str, seed: int = 0) -> list[torch.Tensor]:
    data.scan(split)
    torch.manual_seed(seed)
    dataset = data.make_dataset(data.items(split), split == "train")
    return [dataset[i][0] for i in range(len(dataset))]


@pytest.mark.parametrize("mode", ["ram", "disk"])
def test_cached_tensors_equal_the_uncached_ones(folder, tmp_path, mode):
    plain = data_module(folder)
    cached = data_module(folder, f"data.cache={mode}", f"data.cache_dir={tmp_path / 'cache'}")
    for split in ("val", "train"):  # val: deterministic resize + crop; train: the same random draws
        want, got = batches(plain, split), batches(cached, split)
        assert len(want) == len(got) == len(plain.items(split))
        for a, b in zip(want, got):
            assert torch.equal(a, b)
    assert len(cached.image_cache) == 18


def test_ram_cache_is_shared_memory_that_two_workers_read_without_the_files(folder):
    data = data_module(folder, "data.cache=ram")
    want = batches(data, "val")
    assert all(buffer.is_shared() for buffer in data.image_cache._buffers)
    shutil.rmtree(folder / "val")  # from now on only the cache has these pixels
    dataset = data.make_dataset(data.items("val"), False)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=data.collate_fn(False))
    got = [x for images, _, skipped in loader for x in images]
    assert len(got) == len(want)
    for a, b in zip(want, got):
        assert torch.equal(a, b)


def test_disk_cache_is_reused_and_follows_file_content(folder, tmp_path):
    where = tmp_path / "cache"
    first = ImageCache("disk", None, where)
    paths = sorted((folder / "train" / "a").iterdir())
    assert first.fill(paths) == {}
    assert first.stats["reused"] == 0 and len(list(where.rglob("*.npy"))) == len(paths)

    again = ImageCache("disk", None, where)
    again.fill(paths)
    assert again.stats["reused"] == len(paths)  # another run: nothing decoded again

    # An edited image gets a new entry; the run reads the new pixels, never the stale ones.
    edited = paths[1]
    new_pixels = np.full((9, 11, 3), 77, np.uint8)
    Image.fromarray(new_pixels).save(edited)
    third = ImageCache("disk", None, where)
    third.fill(paths)
    assert third.stats["reused"] == len(paths) - 1
    assert np.array_equal(np.asarray(third.load(edited)), new_pixels)


def test_disk_entries_of_another_decoding_recipe_are_not_reused(folder, tmp_path, monkeypatch):
    where = tmp_path / "cache"
    paths = sorted((folder / "train" / "b").iterdir())
    ImageCache("disk", None, where).fill(paths)
    monkeypatch.setattr(cache_module, "RECIPE", "rgb8-upright-v2")
    later = ImageCache("disk", None, where)
    later.fill(paths)
    assert later.stats["reused"] == 0


def test_a_cached_image_over_a_lower_pixel_limit_is_refused_like_an_uncached_one(folder, tmp_path):
    where = tmp_path / "cache"
    paths = sorted((folder / "train" / "a").iterdir())
    ImageCache("disk", None, where).fill(paths)
    strict = ImageCache("disk", 700, where)  # the first images are 28x20 = 560 px, later ones larger
    bad = strict.fill(paths)
    assert bad and all("700" in reason or "pixels" in reason for reason in bad.values())
    assert len(strict) == len(paths) - len(bad) >= 1


def test_a_truncated_disk_entry_is_rewritten(folder, tmp_path):
    where = tmp_path / "cache"
    path = sorted((folder / "train" / "a").iterdir())[0]
    ImageCache("disk", None, where).fill([path])
    entry = next(where.rglob("*.npy"))
    entry.write_bytes(entry.read_bytes()[:40])
    again = ImageCache("disk", None, where)
    assert again.fill([path]) == {} and again.stats["reused"] == 0
    assert again.pixels(path).shape[2] == 3


def test_undecodable_images_are_skipped_and_named_as_without_a_cache(folder):
    bad = folder / "train" / "a" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    data = data_module(folder, "data.cache=ram")
    data.scan("train")
    assert str(bad) in data.skipped
    assert all(Path(p) != bad for p, _ in data.train_items)


def test_refuses_a_ram_cache_that_would_not_fit(folder, monkeypatch):
    monkeypatch.setattr(cache_module, "available_memory", lambda: 1000)
    data = data_module(folder, "data.cache=ram")
    with pytest.raises(DataError, match=r"data.cache=ram needs .* data.cache=disk"):
        data.scan("train")


def test_refuses_a_disk_cache_that_would_not_fit(folder, tmp_path, monkeypatch):
    full = shutil.disk_usage(tmp_path)._replace(free=10)
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda _: full)
    data = data_module(folder, "data.cache=disk", f"data.cache_dir={tmp_path / 'c'}")
    with pytest.raises(DataError, match=r"data.cache=disk needs .* data.cache_dir"):
        data.scan("train")


def test_unknown_cache_mode_is_a_spec_error(folder, capsys):
    rc, err = tkit(capsys, "train", "-r", folder / "run", f"data.train_dir={folder / 'train'}", "data.cache=gpu")
    assert rc == 2 and "data.cache" in err and "Traceback" not in err


@pytest.mark.slow
def test_training_with_a_ram_cache_through_the_cli(folder, capsys, tmp_path):
    rc, err = tkit(capsys, "train", "-r", tmp_path / "run", f"data.train_dir={folder / 'train'}",
                  f"data.val_dir={folder / 'val'}", "data.image_size=32", "model.pretrained=false",
                  "model.backbone=mobilenet_v2", "train.epochs=1", "train.batch_size=4", "data.cache=ram",
                  "train.histograms=false")
    assert rc == 0, err
    assert "data.cache=ram: 12 images" in (tmp_path / "run" / "log.txt").read_text()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 1
