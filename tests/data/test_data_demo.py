"""Demo datasets: deterministic, held-out val splits, exact KITTI boxes, safe output folders."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferkit.data.demo import DEMO_DATASETS, SHAPE_CLASSES, build_demo, digit_scene, shape_scene
from transferkit.vision.images import load_image
from transferkit.errors import DataError

SMALL = {
    "digits": {"per_class": 3, "val_per_class": 2, "size": 32},
    "objects": {"per_class": 3, "val_per_class": 2, "size": 32},
    "kitti_digits": {"num_train": 4, "num_val": 2, "width": 96, "height": 64},
    "shapes_seg": {"num_train": 4, "num_val": 2, "size": 48},
    "sentences": {"per_class": 8, "val_per_class": 4, "num_test": 7},
    "entities": {"num_train": 12, "num_val": 6, "num_test": 4},
    "figures": {"train": 3, "val": 2, "size": 64},
    "faces": {"train": 4, "val": 2, "size": 32},
    "speech": {"train": 2, "val": 1, "long": 1},
}


def _hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_registry_lists_the_datasets_with_their_tasks():
    assert {name: d.task for name, d in DEMO_DATASETS.items()} == {
        "digits": "classification", "objects": "classification", "kitti_digits": "detection",
        "shapes_seg": "segmentation", "sentences": "text_classification", "entities": "token_classification",
        "figures": "keypoints", "faces": "keypoints", "speech": "speech_to_text"}
    assert all(d.description for d in DEMO_DATASETS.values())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path, name):
    build_demo(name, tmp_path / "a", seed=3, **SMALL[name])
    build_demo(name, tmp_path / "b", seed=3, **SMALL[name])
    build_demo(name, tmp_path / "c", seed=4, **SMALL[name])
    first = _hashes(tmp_path / "a")
    assert first == _hashes(tmp_path / "b")
    assert first != _hashes(tmp_path / "c")
    assert not any(name.startswith(".") for path in first for name in path.split("/"))  # no staging left


def test_default_digits_build_counts_match_the_files(tmp_path):
    summary = build_demo("digits", tmp_path / "digits")  # no timed assertion: CI machines are shared
    assert summary["classes"] == [str(d) for d in range(10)]
    assert summary["counts"]["train"] == {str(d): 40 for d in range(10)}
    assert summary["counts"]["val"] == {str(d): 15 for d in range(10)}
    for split, per_class in (("train", 40), ("val", 15)):
        for digit in range(10):
            files = sorted((tmp_path / "digits" / split / str(digit)).glob("*.png"))
            assert len(files) == per_class
    with Image.open(files[0]) as im:
        assert im.size == (64, 64) and im.mode == "RGB"


def test_digits_csv_lists_every_image_relative_to_its_own_folder(tmp_path):
    out = tmp_path / "d"
    build_demo("digits", out, **SMALL["digits"])
    for split, count in (("train", 30), ("val", 20)):
        rows = _read_csv(out / f"{split}.csv")
        assert len(rows) == count and list(rows[0]) == ["path", "label"]
        on_disk = sorted(p.relative_to(out).as_posix() for p in (out / split).rglob("*.png"))
        assert sorted(r["path"] for r in rows) == on_disk
        assert all(Path(r["path"]).parent.name == r["label"] for r in rows)


def test_digits_val_uses_held_out_sklearn_samples_and_different_bytes(tmp_path):
    out = tmp_path / "d"
    summary = build_demo("digits", out, per_class=20, val_per_class=10, size=32)
    train, val = summary["sklearn_samples"]["train"], summary["sklearn_samples"]["val"]
    assert len(train) == 200 and len(val) == 100
    assert not set(train) & set(val)
    in_names = {split: {p.stem.rsplit("_sk", 1)[1] for p in (out / split).rglob("*.png")} for split in ("train", "val")}
    assert not in_names["train"] & in_names["val"]
    train_bytes = {hashlib.sha256(p.read_bytes()).digest() for p in (out / "train").rglob("*.png")}
    assert not train_bytes & {hashlib.sha256(p.read_bytes()).digest() for p in (out / "val").rglob("*.png")}


def test_objects_has_five_photo_classes_that_the_loader_reads(tmp_path):
    out = tmp_path / "o"
    summary = build_demo("objects", out, **SMALL["objects"])
    assert summary["classes"] == ["astronaut", "cat", "coffee", "motorcycle", "rocket"]
    assert summary["counts"]["val"] == dict.fromkeys(summary["classes"], 2)
    rows = _read_csv(out / "val.csv")
    assert len(rows) == 10
    assert load_image(out / rows[0]["path"]).size == (32, 32)


def _kitti_boxes(label_file: Path) -> list[tuple[str, list[float]]]:
    boxes = []
    for line in label_file.read_text().splitlines():
        fields = line.split(" ")
        assert len(fields) == 15, line
        assert fields[1:4] == ["0.00", "0", "0.00"] and fields[8:] == ["0.00"] * 7
        boxes.append((fields[0], [float(v) for v in fields[4:8]]))
    return boxes


def test_kitti_digits_labels_have_15_fields_and_boxes_inside_the_image(tmp_path):
    out = tmp_path / "k"
    summary = build_demo("kitti_digits", out, **SMALL["kitti_digits"])
    assert summary["counts"]["train"]["images"] == 4 and summary["counts"]["val"]["images"] == 2
    total = 0
    for split in ("train", "val"):
        images = sorted((out / split / "images").glob("*.png"))
        labels = sorted((out / split / "labels").glob("*.txt"))
        assert [p.stem for p in images] == [p.stem for p in labels]
        for image, label in zip(images, labels):
            boxes = _kitti_boxes(label)
            assert 1 <= len(boxes) <= 4
            width, height = Image.open(image).size
            assert (width, height) == (96, 64)
            for cls, (x1, y1, x2, y2) in boxes:
                assert cls in summary["classes"]
                assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
            total += len(boxes)
    assert total == sum(sum(summary["counts"][s]["objects"].values()) for s in ("train", "val"))


def test_kitti_digits_boxes_are_the_tight_box_of_each_digits_ink(tmp_path):
    out = tmp_path / "k"
    build_demo("kitti_digits", out, seed=5, num_train=6, num_val=1)
    for index in range(6):
        scene = digit_scene(5, "train", index)
        # The file on disk is exactly this scene, so the scene's ink mask describes the file.
        written = np.asarray(Image.open(out / "train" / "images" / f"{index:06d}.png"))
        assert np.array_equal(written, scene.image)
        label_boxes = _kitti_boxes(out / "train" / "labels" / f"{index:06d}.txt")
        assert [(b.label, [b.x1, b.y1, b.x2 + 1, b.y2 + 1]) for b in scene.boxes] == label_boxes
        for k, (cls, (x1, y1, x2, y2)) in enumerate(label_boxes, start=1):
            rows, cols = np.nonzero(scene.ink == k)
            assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x1, y1, x2, y2)
        # Outside the ink the background is untouched, so no pixel of a digit lies outside its box.
        untouched = scene.ink == 0
        assert np.array_equal(scene.image[untouched], scene.background[untouched])
        changed = np.any(scene.image != scene.background, axis=2)
        assert changed[~untouched].mean() > 0.8  # the ink is visible, not a colour equal to the background


def test_kitti_digits_class_subset_option(tmp_path):
    summary = build_demo("kitti_digits", tmp_path / "k", num_train=5, num_val=1, classes="1,7")
    assert summary["classes"] == ["1", "7"]
    labels = {line.split()[0] for p in (tmp_path / "k").rglob("*.txt") for line in p.read_text().splitlines()}
    assert labels <= {"1", "7"} and labels
    with pytest.raises(DataError, match="classes"):
        build_demo("kitti_digits", tmp_path / "bad", classes="1,x")


def test_shapes_seg_palette_masks_hold_exactly_the_painted_shape_pixels(tmp_path):
    out = tmp_path / "s"
    summary = build_demo("shapes_seg", out, seed=2, num_train=5, num_val=2, size=64)
    assert summary["classes"] == ["background", "circle", "square", "triangle"] == list(SHAPE_CLASSES)
    assert summary["paths"]["train"] == {"images": "train/images", "masks": "train/masks"}
    seen = set()
    for split, count in (("train", 5), ("val", 2)):
        pixels = np.zeros(4, np.int64)
        for index in range(count):
            image = Image.open(out / split / "images" / f"{index:06d}.png")
            mask = Image.open(out / split / "masks" / f"{index:06d}.png")
            assert image.size == mask.size == (64, 64) and image.mode == "RGB" and mask.mode == "P"
            ids = np.asarray(mask)
            scene = shape_scene(2, split, index, 64)
            assert np.array_equal(np.asarray(image), scene.image) and np.array_equal(ids, scene.mask)
            assert set(np.unique(ids)) <= {0, 1, 2, 3} and (ids > 0).any()
            seen |= set(np.unique(ids).tolist())
            pixels += np.bincount(ids.reshape(-1), minlength=4)
        assert summary["counts"][split]["pixels"] == dict(zip(SHAPE_CLASSES, pixels.tolist()))
    assert seen == {0, 1, 2, 3}
    palette = np.array(Image.open(out / "train" / "masks" / "000000.png").getpalette()[:12]).reshape(4, 3)
    assert palette.tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]  # VOC's colours


def test_shapes_seg_builds_from_the_command_line(tmp_path, capsys):
    from transferkit.cli import main

    assert main(["data", "demo", "shapes_seg", str(tmp_path / "c"), "num_train=2", "num_val=1", "size=32"]) == 0
    assert "built demo dataset 'shapes_seg'" in capsys.readouterr().out
    assert len(list((tmp_path / "c" / "train" / "masks").glob("*.png"))) == 2
    with pytest.raises(DataError, match="size=16 is too small"):
        build_demo("shapes_seg", tmp_path / "d", size=16)


def test_unknown_dataset_name_lists_the_valid_names(tmp_path):
    names = "digits, entities, faces, figures, kitti_digits, objects, sentences, shapes_seg"
    with pytest.raises(DataError, match=f"unknown demo dataset 'mnist'.*{names}"):
        build_demo("mnist", tmp_path / "x")


def test_unknown_or_invalid_option_is_refused(tmp_path):
    with pytest.raises(DataError, match="no option 'per_klass'.*per_class"):
        build_demo("digits", tmp_path / "x", per_klass=3)
    with pytest.raises(DataError, match="per_class=0 must be at least 1"):
        build_demo("digits", tmp_path / "x", per_class=0)
    with pytest.raises(DataError, match="val_per_class=500 leaves no training samples"):
        build_demo("digits", tmp_path / "x", val_per_class=500)
    assert not (tmp_path / "x" / "demo.json").exists()


def test_options_given_as_strings_are_accepted(tmp_path):
    summary = build_demo("digits", tmp_path / "x", per_class="2", val_per_class="1", size="24")
    assert summary["options"] == {"per_class": 2, "val_per_class": 1, "size": 24}


def test_foreign_non_empty_folder_is_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("precious")
    with pytest.raises(DataError, match="not empty and has no demo.json"):
        build_demo("digits", tmp_path / "mine", **SMALL["digits"])
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["thesis.txt"]


def test_previous_build_of_another_dataset_is_refused(tmp_path):
    build_demo("objects", tmp_path / "out", **SMALL["objects"])
    with pytest.raises(DataError, match="holds the demo dataset 'objects', not 'digits'"):
        build_demo("digits", tmp_path / "out", **SMALL["digits"])


def test_rebuild_of_the_same_dataset_replaces_it_without_stale_files(tmp_path):
    out = tmp_path / "out"
    build_demo("digits", out, per_class=4, val_per_class=2, size=32)
    summary = build_demo("digits", out, per_class=2, val_per_class=1, size=32)
    assert len(list((out / "train").rglob("*.png"))) == 20
    marker = json.loads((out / "demo.json").read_text())
    assert marker["options"] == summary["options"] == {"per_class": 2, "val_per_class": 1, "size": 32}
    assert sorted(marker["files"]) == sorted(p for p in _hashes(out) if p != "demo.json")


def test_rebuild_refuses_files_the_previous_build_did_not_write(tmp_path):
    out = tmp_path / "out"
    build_demo("digits", out, **SMALL["digits"])
    (out / "train" / "3" / "my_photo.png").write_bytes(b"mine")
    with pytest.raises(DataError, match=r"1 file\(s\) the previous build did not write.*my_photo.png"):
        build_demo("digits", out, **SMALL["digits"])
    assert (out / "train" / "3" / "my_photo.png").read_bytes() == b"mine"


def test_output_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        build_demo("digits", tmp_path / "f")


def test_missing_bundled_skimage_picture_is_a_data_error(tmp_path, monkeypatch):
    import skimage.data

    from transferkit.data import demo

    def missing():
        raise ModuleNotFoundError("requires pooch")

    monkeypatch.setattr(skimage.data, "rocket", missing)
    demo._object_photos.cache_clear()
    try:
        with pytest.raises(DataError, match="does not ship the image skimage.data.rocket"):
            build_demo("objects", tmp_path / "o", **SMALL["objects"])
    finally:
        demo._object_photos.cache_clear()
