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


# -- data.cache_short_side: large images kept reduced ---------------------------------------------------

def photo(path: Path, width: int, height: int, orientation: int = 1) -> Path:
    """A textured (not flat) image, so a reduction that went wrong would show in the pixels."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([(x * 7) % 256, (y * 5) % 256, ((x + y) * 3) % 256], axis=-1).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    if path.suffix == ".jpg":
        Image.fromarray(pixels).save(path, quality=92, exif=exif)
    else:
        Image.fromarray(pixels).save(path)
    return path


@pytest.mark.parametrize("size,short,want", [((400, 300), 100, (133, 100)), ((300, 400), 100, (100, 133)),
                                             ((90, 60), 100, (90, 60)), ((101, 101), 100, (100, 100))])
def test_reduced_size_keeps_the_aspect_and_never_enlarges(size, short, want):
    from transferkit.vision.images import reduced_size

    assert reduced_size(size, short) == want
    assert reduced_size(size[::-1], short) == want[::-1]  # an EXIF rotation swaps both alike


@pytest.mark.parametrize("mode", ["ram", "disk"])
def test_short_side_stores_large_images_reduced_and_small_ones_exactly(tmp_path, mode):
    from transferkit.vision.images import load_image

    big_jpeg = photo(tmp_path / "big.jpg", 640, 480)  # JPEG: decoded at a coarser DCT scale first
    big_png = photo(tmp_path / "big.png", 480, 640)
    sideways = photo(tmp_path / "side.jpg", 640, 480, orientation=6)  # upright it is 480 wide, 640 high
    small = photo(tmp_path / "small.png", 60, 40)
    cache = ImageCache(mode, None, tmp_path / "cache", short_side=120)
    assert cache.fill([big_jpeg, big_png, sideways, small]) == {}
    assert cache.pixels(big_jpeg).shape == (120, 160, 3)
    assert cache.pixels(big_png).shape == (160, 120, 3)
    assert cache.pixels(sideways).shape == (160, 120, 3)
    assert np.array_equal(cache.pixels(small), np.asarray(load_image(small)))
    # The reduced copy is the full decode, reduced: close to it at every pixel, not just the same shape.
    full = Image.open(big_png).convert("RGB").resize((120, 160), Image.Resampling.LANCZOS)
    assert np.abs(cache.pixels(big_png).astype(int) - np.asarray(full).astype(int)).mean() < 1.0
    full = load_image(big_jpeg).resize((160, 120), Image.Resampling.BOX)
    assert np.abs(cache.pixels(big_jpeg).astype(float) - np.asarray(full).astype(float)).mean() < 12
    # What the size report counts is what is stored.
    assert cache.stats["bytes"] == (120 * 160 + 160 * 120 * 2 + 60 * 40) * 3


def test_disk_entries_of_another_short_side_are_not_reused(tmp_path):
    paths = [photo(tmp_path / "a.png", 300, 200), photo(tmp_path / "b.jpg", 200, 300)]
    ImageCache("disk", None, tmp_path / "cache", short_side=64).fill(paths)
    same = ImageCache("disk", None, tmp_path / "cache", short_side=64)
    same.fill(paths)
    other = ImageCache("disk", None, tmp_path / "cache", short_side=100)
    other.fill(paths)
    full = ImageCache("disk", None, tmp_path / "cache")
    full.fill(paths)
    assert same.stats["reused"] == 2 and other.stats["reused"] == 0 and full.stats["reused"] == 0
    assert min(other.pixels(paths[0]).shape[:2]) == 100 and full.pixels(paths[0]).shape[:2] == (200, 300)


def test_a_reduced_disk_entry_still_obeys_the_pixel_limit_of_the_file(tmp_path):
    path = photo(tmp_path / "a.png", 300, 200)
    ImageCache("disk", None, tmp_path / "cache", short_side=32).fill([path])
    strict = ImageCache("disk", 50_000, tmp_path / "cache", short_side=32)  # the file has 60,000 px
    assert list(strict.fill([path])) == [str(path)]


def test_classification_caches_at_twice_the_input_size_unless_told_full(tmp_path, capsys):
    for split, count in (("train", 2), ("val", 2)):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(count):
                photo(tmp_path / split / c / f"{i}.jpg", 200 + 8 * i, 150)
    auto = data_module(tmp_path, "data.cache=ram")  # image_size=32: cached with a 64 px shorter side
    auto.scan("val")
    assert all(min(auto.image_cache.pixels(p).shape[:2]) == 64 for p, _ in auto.items("val"))
    full = data_module(tmp_path, "data.cache=ram", "data.cache_short_side=full")
    plain = data_module(tmp_path)
    for a, b, c in zip(batches(plain, "val"), batches(full, "val"), batches(auto, "val")):
        assert torch.equal(a, b)  # full size: exactly the uncached tensors
        assert (a - c).abs().mean() < 0.1  # reduced: the same picture after the val resize (normalised units)
    rc, err = tkit(capsys, "train", "-r", tmp_path / "r", f"data.train_dir={tmp_path / 'train'}",
                   "data.cache=ram", "data.cache_short_side=8")
    assert rc == 2 and "data.cache_short_side" in err
