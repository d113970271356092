"""Bad and unusual image files inside training, validation and inference folders.

Each bad file must be skipped, counted and named (metrics.json / inference.json); each unusual
but valid file (PNG named .jpg, grayscale, RGBA, palette, 16-bit, CMYK, EXIF-rotated, non-ASCII
name) must load and be used. Never a traceback, never a file silently dropped.
"""
from __future__ import annotations

import csv
import shutil

import pytest

from rel_helpers import BAD_IMAGES, FAST, GOOD_ODD_IMAGES, MAX_PIXELS, read_json, truncated_jpeg, write_image_corpus


@pytest.fixture(scope="module")
def corpus_run(digits, tmp_path_factory, _session_home):
    """One training run with the whole corpus in train/0 and in val/1 (4 bad + 8 odd files each)."""
    from transferkit.cli import main

    root = tmp_path_factory.mktemp("corpus")
    train, val = shutil.copytree(digits / "train", root / "train"), shutil.copytree(digits / "val", root / "val")
    write_image_corpus(train / "0", seed=0)
    write_image_corpus(val / "1", seed=100)
    results = root / "run"
    # batch 32 > 20 training images: one batch, nothing dropped, so every file is decoded once.
    rc = main(["classification", "train", "-r", str(results), f"data.train_dir={train}", f"data.val_dir={val}",
               *FAST, "train.batch_size=32", MAX_PIXELS])
    return rc, results, train, val


def test_training_with_bad_images_succeeds_and_counts_each_one_exactly(corpus_run):
    rc, results, train, val = corpus_run
    assert rc == 0
    skipped = read_json(results / "metrics.json")["skipped_images"]
    expected = {str(train / "0" / name) for name in BAD_IMAGES} | {str(val / "1" / name) for name in BAD_IMAGES}
    assert skipped["count"] == len(expected) == 8
    assert set(skipped["files"]) == expected


def test_unusual_but_valid_images_are_loaded_not_skipped(corpus_run):
    rc, results, train, val = corpus_run
    assert rc == 0
    files = read_json(results / "metrics.json")["skipped_images"]["files"]
    for name in GOOD_ODD_IMAGES:
        assert str(train / "0" / name) not in files
        assert str(val / "1" / name) not in files


def test_oversized_image_reason_names_the_max_image_pixels_key(corpus_run):
    rc, results, train, _ = corpus_run
    reason = read_json(results / "metrics.json")["skipped_images"]["files"][str(train / "0" / "huge_300x300.png")]
    assert "300x300" in reason and "data.max_image_pixels" in reason


def test_skip_reasons_say_what_is_wrong_with_the_file(corpus_run):
    rc, results, train, _ = corpus_run
    files = read_json(results / "metrics.json")["skipped_images"]["files"]
    assert "empty (0 bytes)" in files[str(train / "0" / "zero_bytes.jpg")]
    assert "not an image" in files[str(train / "0" / "text_named.jpg")]


def test_image_counts_in_metrics_are_the_images_actually_used(corpus_run):
    rc, results, _, _ = corpus_run
    metrics = read_json(results / "metrics.json")
    assert metrics["train_images"] == 3 * 4 + len(GOOD_ODD_IMAGES)
    assert metrics["val_images"] == 3 * 2 + len(GOOD_ODD_IMAGES)


def test_evaluate_skips_bad_val_images_and_scores_the_unusual_ones(trained, digits, tmp_path, tkit):
    val = shutil.copytree(digits / "val", tmp_path / "val")
    write_image_corpus(val / "2", seed=200)
    result = tkit("evaluate", "-r", tmp_path / "eval", "-m", trained / "best.ckpt", f"data.val_dir={val}",
                  *FAST, MAX_PIXELS)
    assert result.rc == 0, result.err
    metrics = read_json(tmp_path / "eval" / "metrics.json")
    assert metrics["num_images"] == 3 * 2 + len(GOOD_ODD_IMAGES)
    assert metrics["skipped_images"]["count"] == len(BAD_IMAGES)
    assert set(metrics["skipped_images"]["files"]) == {str(val / "2" / name) for name in BAD_IMAGES}


def test_truncated_images_are_reported_even_when_their_batch_is_dropped(digits, tmp_path, tkit):
    # 6 good + 9 truncated = 15 files, batch 8, drop_last: one batch of 8 is loaded, 7 files never
    # are. At most 8 truncated files can be in the loaded batch, so whatever the shuffle, at
    # least one truncated file is never decoded by the training loader.
    train = tmp_path / "train"
    for c in ("0", "1", "2"):
        (train / c).mkdir(parents=True)
        for path in sorted((digits / "train" / c).iterdir())[:2]:
            shutil.copy(path, train / c)
    for i in range(9):
        (train / str(i % 3) / f"truncated_{i}.jpg").write_bytes(truncated_jpeg(i))
    result = tkit("train", "-r", tmp_path / "run", f"data.train_dir={train}", f"data.val_dir={digits / 'val'}", *FAST)
    assert result.rc == 0, result.err
    skipped = read_json(tmp_path / "run" / "metrics.json")["skipped_images"]
    assert skipped["count"] == 9
    assert set(skipped["files"]) == {str(train / str(i % 3) / f"truncated_{i}.jpg") for i in range(9)}


def test_inference_writes_a_row_per_good_image_and_lists_every_bad_one(trained, digits, tmp_path, tkit):
    images = tmp_path / "images"
    shutil.copytree(digits / "val" / "0", images)
    (images / "nested").mkdir()
    shutil.copy(sorted((digits / "val" / "1").iterdir())[0], images / "nested")
    (images / "zero_bytes.jpg").write_bytes(b"")
    (images / "nested" / "notes.png").write_text("not pixels", encoding="utf-8")
    good = sorted(p for p in images.rglob("*.png") if p.name != "notes.png")
    assert len(good) == 3

    result = tkit("inference", "-r", tmp_path / "inf", "-m", trained / "best.ckpt", f"inference.images={images}", *FAST)
    assert result.rc == 0, result.err
    with open(tmp_path / "inf" / "predictions.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["path"] for r in rows) == [str(p) for p in good]
    assert all(r["label1"] in ("0", "1", "2") for r in rows)
    summary = read_json(tmp_path / "inf" / "inference.json")
    assert summary["images"] == 3
    assert summary["skipped_images"]["count"] == 2
    assert set(summary["skipped_images"]["files"]) == {str(images / "zero_bytes.jpg"),
                                                      str(images / "nested" / "notes.png")}
