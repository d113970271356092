"""convert_dataset, split_dataset and the dataset report: layouts, splits, links and counts."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from transferkit.vision import convert
from transferkit.vision.convert import convert_dataset, dataset_report, format_report, split_dataset
from transferkit.vision.formats import read_coco, read_kitti, read_yolo
from transferkit.errors import DataError

W, H = 64, 48


def kitti_row(name: str, x1, y1, x2, y2) -> str:
    return f"{name} 0.00 0 0.00 {x1} {y1} {x2} {y2} 1.5 1.6 3.9 1.0 1.5 20.0 0.1"


def make_kitti(root: Path, count: int = 10) -> tuple[Path, Path]:
    """frame_1.png .. frame_<count>.png (64x48) with one car each, and a pedestrian on even frames."""
    images_dir, labels_dir = root / "images", root / "labels"
    images_dir.mkdir(parents=True)
    labels_dir.mkdir(parents=True)
    for i in range(1, count + 1):
        Image.new("RGB", (W, H), (i * 20 % 256, 80, 40)).save(images_dir / f"frame_{i}.png")
        rows = [kitti_row("Car", i, 2, i + 20.5, 30)] + ([kitti_row("pedestrian", 40, 1, 45, 40)] if i % 2 == 0 else [])
        (labels_dir / f"frame_{i}.txt").write_text("".join(r + "\n" for r in rows))
    return images_dir, labels_dir


def stems(folder: Path) -> set[str]:
    return {p.stem for p in folder.iterdir()}


def boxes_by_stem(dataset) -> dict[str, list]:
    return {it.image.stem: sorted((dataset.classes[l], *map(float, b)) for b, l in zip(it.boxes, it.labels))
            for it in dataset.items}


def test_random_split_writes_disjoint_train_and_val_with_the_right_counts(tmp_path):
    images, labels = make_kitti(tmp_path / "src")
    report = convert_dataset("kitti", images, labels, "kitti", tmp_path / "out", classes=["car", "pedestrian"],
                             val_split=30, split_mode="random", seed=3)
    train, val = tmp_path / "out" / "train", tmp_path / "out" / "val"
    assert stems(train / "images") == stems(train / "labels") and len(stems(train / "images")) == 7
    assert stems(val / "images") == stems(val / "labels") and len(stems(val / "images")) == 3
    assert not stems(train / "images") & stems(val / "images")
    assert stems(train / "images") | stems(val / "images") == {f"frame_{i}" for i in range(1, 11)}
    assert report["conversion"]["splits"]["val"]["images"] == 3
    assert json.loads((tmp_path / "out" / "convert_report.json").read_text())["images"] == 10


def test_random_split_depends_on_the_seed_only(tmp_path):
    images, labels = make_kitti(tmp_path / "src")
    dataset = read_kitti(images, labels, classes=None)
    val_names = [{it.image.name for it in split_dataset(dataset, 40, "random", seed)[1].items} for seed in (0, 0, 1)]
    assert val_names[0] == val_names[1] != val_names[2]


def test_sequence_split_takes_the_last_frames_in_natural_name_order(tmp_path):
    images, labels = make_kitti(tmp_path / "src", count=12)
    convert_dataset("kitti", images, labels, "kitti", tmp_path / "out", val_split=25, split_mode="sequence")
    # frame_10..12 are last in natural order (a plain string sort would put frame_9 last)
    assert stems(tmp_path / "out" / "val" / "images") == {"frame_10", "frame_11", "frame_12"}
    assert len(stems(tmp_path / "out" / "train" / "images")) == 9


def test_convert_to_yolo_writes_names_and_data_yaml_and_reads_back_the_same_boxes(tmp_path):
    images, labels = make_kitti(tmp_path / "src", count=4)
    convert_dataset("kitti", images, labels, "yolo", tmp_path / "out", val_split=50, split_mode="sequence")
    data = yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())
    assert data["names"] == ["Car", "pedestrian"] and (data["train"], data["val"]) == ("train/images", "val/images")
    original = boxes_by_stem(read_kitti(images, labels, classes=None))
    for split in ("train", "val"):
        folder = tmp_path / "out" / split
        back = boxes_by_stem(read_yolo(folder / "images", folder / "labels", tmp_path / "out" / "data.yaml", None))
        for stem, rows in back.items():
            assert [r[0] for r in rows] == [r[0] for r in original[stem]]
            np.testing.assert_allclose([r[1:] for r in rows], [r[1:] for r in original[stem]], atol=1e-3)


def test_convert_to_coco_and_back_to_kitti_keeps_every_box(tmp_path):
    images, labels = make_kitti(tmp_path / "src", count=5)
    convert_dataset("kitti", images, labels, "coco", tmp_path / "coco", val_split=20, seed=1)
    assert sorted(p.name for p in (tmp_path / "coco").iterdir()) == ["convert_report.json", "train", "train.json",
                                                                     "val", "val.json"]
    coco = json.loads((tmp_path / "coco" / "train.json").read_text())
    assert {"width": W, "height": H}.items() <= coco["images"][0].items()
    assert all(a["iscrowd"] == 0 and a["area"] > 0 for a in coco["annotations"])
    convert_dataset("coco", tmp_path / "coco" / "train" / "images", tmp_path / "coco" / "train.json", "kitti",
                    tmp_path / "back")
    back = boxes_by_stem(read_kitti(tmp_path / "back" / "train" / "images", tmp_path / "back" / "train" / "labels",
                                    classes=None))
    original = boxes_by_stem(read_kitti(images, labels, classes=None))
    assert len(back) == 4
    for stem, rows in back.items():
        np.testing.assert_allclose([r[1:] for r in rows], [r[1:] for r in original[stem]], atol=1e-3)
    assert read_coco(tmp_path / "coco" / "val" / "images", tmp_path / "coco" / "val.json", None).items


def test_images_are_hard_linked_when_possible(tmp_path):
    images, labels = make_kitti(tmp_path / "src", count=2)
    report = convert_dataset("kitti", images, labels, "kitti", tmp_path / "out")
    assert report["conversion"]["splits"]["train"]["images_linked"] == 2
    assert os.path.samefile(images / "frame_1.png", tmp_path / "out" / "train" / "images" / "frame_1.png")


def test_images_are_copied_when_linking_fails(tmp_path, monkeypatch):
    images, labels = make_kitti(tmp_path / "src", count=2)

    def no_links(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(convert.os, "link", no_links)
    report = convert_dataset("kitti", images, labels, "kitti", tmp_path / "out")
    assert report["conversion"]["splits"]["train"]["images_copied"] == 2
    copy = tmp_path / "out" / "train" / "images" / "frame_1.png"
    assert copy.read_bytes() == (images / "frame_1.png").read_bytes()
    assert not os.path.samefile(images / "frame_1.png", copy)


@pytest.mark.parametrize("val_split, message", [(0.2, "write 20"), (100, "0 <= val_split < 100"), (-5, "percent")])
def test_val_split_is_a_percent_and_a_fraction_is_refused(tmp_path, val_split, message):
    images, labels = make_kitti(tmp_path / "src", count=2)
    with pytest.raises(DataError, match=message):
        convert_dataset("kitti", images, labels, "kitti", tmp_path / "out", val_split=val_split)


def test_a_small_split_still_gives_each_side_an_image(tmp_path):
    images, labels = make_kitti(tmp_path / "src", count=3)
    train, val = split_dataset(read_kitti(images, labels, None), 5, "random")
    assert (len(train.items), len(val.items)) == (2, 1)


def test_convert_refuses_a_folder_that_is_not_empty(tmp_path):
    images, labels = make_kitti(tmp_path / "src", count=2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        convert_dataset("kitti", images, labels, "yolo", tmp_path / "out")


def test_report_counts_classes_box_sizes_and_problems(tmp_path):
    images, labels = make_kitti(tmp_path / "src", count=4)
    (labels / "frame_1.txt").write_text(kitti_row("car", 1, 1, 9, 9) + "\ncar 1 2\n" + kitti_row("van", 1, 1, 9, 9))
    report = dataset_report(read_kitti(images, labels, classes=["car", "pedestrian"]))
    assert report["images"] == 4 and report["objects"] == 6
    assert report["objects_per_class"] == {"car": 4, "pedestrian": 2}
    assert report["box_width_px"] == {"<16": 3, "16-32": 3, "32-64": 0, "64-128": 0, "128-256": 0, ">=256": 0}
    assert report["box_height_px"]["16-32"] == 3 and report["box_height_px"]["32-64"] == 2
    text = format_report(report)
    assert "frame_1.txt:2: 3 fields" in text
    assert "van 1" in text and "case_insensitive_match: 1" in text
    assert len(text.splitlines()) <= 8
