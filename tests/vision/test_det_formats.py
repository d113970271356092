"""KITTI / COCO / YOLO readers and writers: boxes, classes, and every bad row reported with file:line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferkit.vision.boxes import DetectionDataset, ImageBoxes
from transferkit.vision.convert import write_coco, write_kitti, write_yolo
from transferkit.vision.formats import read_coco, read_kitti, read_names, read_yolo
from transferkit.errors import DataError

W, H = 64, 48


def kitti_row(name: str, x1, y1, x2, y2, score=None) -> str:
    row = f"{name} 0.00 0 0.00 {x1} {y1} {x2} {y2} 1.5 1.6 3.9 1.0 1.5 20.0 0.1"
    return row if score is None else f"{row} {score}"


def make_kitti(root: Path, labels: dict[str, list[str] | bytes], images: list[str] | None = None) -> tuple[Path, Path]:
    """images/<stem>.png (64x48) for each stem in `images` (default: the label stems), labels/<stem>.txt."""
    images_dir, labels_dir = root / "images", root / "labels"
    images_dir.mkdir(parents=True)
    labels_dir.mkdir(parents=True)
    for stem in labels if images is None else images:
        Image.new("RGB", (W, H), (90, 120, 30)).save(images_dir / f"{stem}.png")
    for stem, rows in labels.items():
        data = rows if isinstance(rows, bytes) else "".join(r + "\n" for r in rows).encode()
        (labels_dir / f"{stem}.txt").write_bytes(data)
    return images_dir, labels_dir


def by_stem(dataset: DetectionDataset) -> dict[str, ImageBoxes]:
    return {it.image.stem: it for it in dataset.items}


def named_boxes(dataset: DetectionDataset) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    """stem -> sorted (class name, box) pairs: comparable across datasets whose class order differs."""
    return {it.image.stem: sorted((dataset.classes[l], tuple(map(float, b))) for b, l in zip(it.boxes, it.labels))
            for it in dataset.items}


def assert_same_boxes(a: DetectionDataset, b: DetectionDataset, tolerance: float = 1e-3) -> None:
    left, right = named_boxes(a), named_boxes(b)
    assert left.keys() == right.keys()
    for stem in left:
        assert [n for n, _ in left[stem]] == [n for n, _ in right[stem]], stem
        np.testing.assert_allclose([bx for _, bx in left[stem]], [bx for _, bx in right[stem]], atol=tolerance)


@pytest.fixture
def kitti(tmp_path):
    return make_kitti(tmp_path / "kitti", {
        "000001": [kitti_row("car", 10.5, 5.25, 30.75, 20), kitti_row("pedestrian", 40, 10, 50, 40),
                   "DontCare -1 -1 -10 1 1 8 8 -1 -1 -1 -1000 -1000 -1000 -10"],
        "000002": [kitti_row("car", 0, 0, 64, 48)],
        "000003": [],
    })


# ------------------------------------------------------------------------------------------ KITTI

def test_kitti_boxes_are_read_as_given_with_image_size_from_the_header(kitti):
    dataset = read_kitti(*kitti, classes=None)
    assert dataset.classes == ["car", "pedestrian"]  # all names found, sorted
    first = by_stem(dataset)["000001"]
    np.testing.assert_allclose(first.boxes, [[10.5, 5.25, 30.75, 20], [40, 10, 50, 40]])
    assert first.labels.tolist() == [0, 1]
    assert (first.width, first.height) == (W, H)
    assert first.scores is None
    assert len(by_stem(dataset)["000003"].boxes) == 0
    assert dataset.problems.counts == {}


def test_dontcare_becomes_an_ignore_region_not_an_object(kitti):
    first = by_stem(read_kitti(*kitti, classes=["car", "pedestrian"]))["000001"]
    np.testing.assert_allclose(first.ignore, [[1, 1, 8, 8]])
    assert len(first.boxes) == 2


def test_sixteenth_field_is_read_as_a_prediction_score(tmp_path):
    dirs = make_kitti(tmp_path, {"a": [kitti_row("car", 1, 2, 11, 12, 0.87), kitti_row("car", 5, 5, 9, 9, 0.25)]})
    item = read_kitti(*dirs, classes=["car"]).items[0]
    np.testing.assert_allclose(item.scores, [0.87, 0.25])


def test_unscored_row_among_predictions_is_reported(tmp_path):
    dirs = make_kitti(tmp_path, {"a": [kitti_row("car", 1, 2, 11, 12, 0.9), kitti_row("car", 5, 5, 9, 9)]})
    dataset = read_kitti(*dirs, classes=["car"])
    assert len(dataset.items[0].boxes) == 1
    assert dataset.problems.examples["missing_score"][0].endswith("a.txt:2: no score, but other rows are scored "
                                                                  "predictions")


def test_class_names_match_ignoring_case_and_the_match_is_reported(tmp_path):
    dirs = make_kitti(tmp_path, {"a": [kitti_row("Car", 1, 1, 9, 9), kitti_row("Car", 2, 2, 9, 9)],
                                 "b": [kitti_row("car", 1, 1, 9, 9)]})
    dataset = read_kitti(*dirs, classes=["car"])
    assert sum(len(it.boxes) for it in dataset.items) == 3
    assert dataset.problems.counts["case_insensitive_match"] == 1  # once per distinct label name
    assert "a.txt:1: label 'Car' counted as class 'car'" in dataset.problems.examples["case_insensitive_match"][0]


def test_case_variants_found_without_classes_merge_into_one_class(tmp_path):
    dirs = make_kitti(tmp_path, {"a": [kitti_row("Car", 1, 1, 9, 9)], "b": [kitti_row("car", 1, 1, 9, 9)]})
    dataset = read_kitti(*dirs, classes=None)
    assert dataset.classes == ["Car"]
    assert dataset.problems.counts["case_insensitive_match"] == 1


def test_class_mapping_maps_source_names_and_counts_the_unmapped(tmp_path):
    dirs = make_kitti(tmp_path, {"a": [kitti_row("Van", 1, 1, 9, 9), kitti_row("truck", 2, 2, 9, 9),
                                       kitti_row("car", 3, 3, 9, 9), kitti_row("Cyclist", 4, 4, 9, 9),
                                       kitti_row("Cyclist", 5, 5, 9, 9)]})
    dataset = read_kitti(*dirs, classes=["car"], class_mapping={"van": "car", "Truck": "car"})
    assert dataset.items[0].labels.tolist() == [0, 0, 0]
    assert dataset.problems.unmapped_classes == {"Cyclist": 2}
    assert dataset.problems.counts["case_insensitive_match"] == 2  # 'Van' vs key 'van', 'truck' vs 'Truck'


def test_mapping_to_a_class_that_is_not_trained_is_an_error(tmp_path):
    dirs = make_kitti(tmp_path, {"a": [kitti_row("van", 1, 1, 9, 9)]})
    with pytest.raises(DataError, match="maps 'van' to 'bus', which is not in classes"):
        read_kitti(*dirs, classes=["car"], class_mapping={"van": "bus"})


def test_no_object_mapping_to_any_class_raises_with_names_found_and_expected(tmp_path):
    dirs = make_kitti(tmp_path, {"a": [kitti_row("Vehicle", 1, 1, 9, 9)], "b": [kitti_row("Person", 1, 1, 9, 9)]})
    with pytest.raises(DataError) as error:
        read_kitti(*dirs, classes=["car", "pedestrian"])
    assert "Vehicle (1)" in str(error.value) and "Person (1)" in str(error.value)
    assert "['car', 'pedestrian']" in str(error.value)


@pytest.mark.parametrize("row, kind, message", [
    ("car 0 0 0 1 2 3", "wrong_field_count", "7 fields"),
    (kitti_row("car", 1, "two", 9, 9), "non_numeric", "column 6 'two' is not a finite number"),
    (kitti_row("car", 1, 2, 9, "nan"), "non_numeric", "column 8 'nan'"),
    (kitti_row("car", 9, 2, 1, 9), "inverted_box", "x2 < x1"),
    (kitti_row("car", 1, 5, 9, 5), "zero_area_box", "zero area"),
    (kitti_row("car", 70, 50, 90, 60), "outside_image", "outside the 64x48 image"),
])
def test_each_bad_row_is_skipped_and_reported_with_file_and_line(tmp_path, row, kind, message):
    dirs = make_kitti(tmp_path, {"a": [kitti_row("car", 1, 1, 9, 9), row]})
    dataset = read_kitti(*dirs, classes=["car"])
    assert len(dataset.items[0].boxes) == 1
    assert dataset.problems.counts == {kind: 1}
    example = dataset.problems.examples[kind][0]
    assert example.startswith(str(dirs[1] / "a.txt") + ":2: ") and message in example


def test_box_crossing_the_border_is_clipped_kept_and_counted(tmp_path):
    dirs = make_kitti(tmp_path, {"a": [kitti_row("car", -5, 10, 70, 60)]})
    dataset = read_kitti(*dirs, classes=["car"])
    np.testing.assert_allclose(dataset.items[0].boxes, [[0, 10, 64, 48]])
    assert dataset.problems.counts == {"clipped": 1}
    assert "a.txt:1: box -5,10,70,60 clipped" in dataset.problems.examples["clipped"][0]


def test_missing_label_file_and_label_without_image_are_counted(tmp_path):
    dirs = make_kitti(tmp_path, {"a": [kitti_row("car", 1, 1, 9, 9)], "orphan": []}, images=["a", "b"])
    dataset = read_kitti(*dirs, classes=["car"])
    assert sorted(by_stem(dataset)) == ["a", "b"]
    assert len(by_stem(dataset)["b"].boxes) == 0
    assert dataset.problems.counts == {"missing_label_file": 1, "label_without_image": 1}
    assert "orphan.txt" in dataset.problems.examples["label_without_image"][0]


def test_label_file_that_is_not_utf8_is_skipped_with_its_byte_offset(tmp_path):
    bad = (kitti_row("car", 1, 1, 9, 9) + "\n").encode() + b"caf\xe9 0 0 0 1 1 9 9 0 0 0 0 0 0 0\n"
    dirs = make_kitti(tmp_path, {"a": [kitti_row("car", 1, 1, 9, 9)], "b": bad})
    dataset = read_kitti(*dirs, classes=["car"])
    assert sorted(by_stem(dataset)) == ["a"]  # b's objects are unknown, so its image is left out
    offset = bad.index(b"\xe9")
    assert f"b.txt: byte {offset}: not UTF-8" in dataset.problems.examples["label_not_utf8"][0]


def test_unreadable_image_is_counted_and_left_out(tmp_path):
    dirs = make_kitti(tmp_path, {"a": [kitti_row("car", 1, 1, 9, 9)], "b": [kitti_row("car", 1, 1, 9, 9)]})
    (dirs[0] / "b.png").write_bytes(b"this is not a png")
    dataset = read_kitti(*dirs, classes=["car"])
    assert sorted(by_stem(dataset)) == ["a"]
    assert dataset.problems.counts == {"unreadable_image": 1}
    assert "b.png" in dataset.problems.examples["unreadable_image"][0]


def test_labels_named_unlike_any_image_are_an_error(tmp_path):
    dirs = make_kitti(tmp_path, {"x": [kitti_row("car", 1, 1, 9, 9)]}, images=["a"])
    with pytest.raises(DataError, match="named like an image"):
        read_kitti(*dirs, classes=["car"])


def test_kitti_writer_writes_a_class_name_with_a_space_as_underscores(tmp_path):
    """KITTI rows are space-separated: `traffic light` is written `traffic_light` (read_kitti maps it back)."""
    dataset = DetectionDataset(["traffic light"], [ImageBoxes(tmp_path / "a.png", [[1, 1, 5, 5]], [0])])
    report = write_kitti(dataset, tmp_path / "labels")
    assert report["kitti_names"] == {"traffic light": "traffic_light"}
    assert (tmp_path / "labels" / "a.txt").read_text().split()[0] == "traffic_light"


# ------------------------------------------------------------------------------------------- COCO

def coco_file(tmp_path: Path, annotations: list[dict], images: list[dict] | None = None) -> Path:
    path = tmp_path / "instances.json"
    images = images or [{"id": 1, "file_name": "a.png", "width": W, "height": H}]
    categories = [{"id": 3, "name": "car"}, {"id": 7, "name": "person"}]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def test_coco_bbox_xywh_becomes_x1y1x2y2_and_crowd_becomes_ignore(tmp_path):
    make_kitti(tmp_path, {"a": []})
    path = coco_file(tmp_path, [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 5, 20, 30], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4], "iscrowd": 1},
    ])
    dataset = read_coco(tmp_path / "images", path, classes=None)
    assert dataset.classes == ["car", "person"]  # declared categories, by id
    item = dataset.items[0]
    np.testing.assert_allclose(item.boxes, [[10, 5, 30, 35]])
    assert item.labels.tolist() == [1]
    np.testing.assert_allclose(item.ignore, [[1, 2, 4, 6]])


def test_coco_images_missing_on_disk_and_bad_annotations_are_counted(tmp_path):
    make_kitti(tmp_path, {"a": []})
    path = coco_file(tmp_path, [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5]},
        {"id": 2, "image_id": 2, "category_id": 3, "bbox": [1, 1, 5, 5]},  # image 2 is missing: not counted again
        {"id": 3, "image_id": 1, "category_id": 99, "bbox": [1, 1, 5, 5]},
        {"id": 4, "image_id": 1, "category_id": 3, "bbox": [1, "x", 5, 5]},
        {"id": 5, "image_id": 1, "category_id": 3, "bbox": [1, 1, -5, 5]},
    ], images=[{"id": 1, "file_name": "a.png", "width": 640, "height": 480}, {"id": 2, "file_name": "gone.png"}])
    dataset = read_coco(tmp_path / "images", path, classes=["car"])
    assert len(dataset.items) == 1 and len(dataset.items[0].boxes) == 1
    assert dataset.problems.counts == {"image_missing": 1, "size_mismatch": 1, "unknown_category": 1,
                                       "bad_annotation": 1, "inverted_box": 1}
    assert "annotations[2] (id 3)" in dataset.problems.examples["unknown_category"][0]


def test_coco_file_that_is_not_json_names_the_line(tmp_path):
    make_kitti(tmp_path, {"a": []})
    (tmp_path / "bad.json").write_text('{"images": [\n  oops]}')
    with pytest.raises(DataError, match=r"bad.json:2:3: not valid JSON"):
        read_coco(tmp_path / "images", tmp_path / "bad.json", classes=None)


# ------------------------------------------------------------------------------------------- YOLO

def test_yolo_normalised_boxes_become_pixels(tmp_path):
    dirs = make_kitti(tmp_path, {"a": ["1 0.5 0.5 0.25 0.5", "0 0.125 0.25 0.25 0.5"]})
    dataset = read_yolo(*dirs, names=["car", "person"], classes=None)
    assert dataset.classes == ["car", "person"]  # the names order, so ids survive a round trip
    np.testing.assert_allclose(dataset.items[0].boxes, [[24, 12, 40, 36], [0, 0, 16, 24]])
    assert dataset.items[0].labels.tolist() == [1, 0]
    assert dataset.items[0].scores is None


def test_yolo_unknown_class_id_is_reported(tmp_path):
    dirs = make_kitti(tmp_path, {"a": ["0 0.5 0.5 0.2 0.2", "5 0.5 0.5 0.2 0.2", "1.5 0.5 0.5 0.2 0.2"]})
    dataset = read_yolo(*dirs, names=["car", "person"], classes=None)
    assert len(dataset.items[0].boxes) == 1
    assert dataset.problems.counts == {"unknown_class_id": 2}
    assert "a.txt:2: class id 5 is not in 0..1" in dataset.problems.examples["unknown_class_id"][0]


@pytest.mark.parametrize("file, text", [
    ("obj.names", "car\nperson\n"),
    ("data.yaml", "nc: 2\nnames: [car, person]\n"),
    ("data.yaml", "names:\n  0: car\n  1: person\n"),
])
def test_yolo_names_come_from_a_names_file_or_data_yaml(tmp_path, file, text):
    (tmp_path / file).write_text(text)
    assert read_names(tmp_path / file) == ["car", "person"]


def test_yolo_names_file_inside_the_labels_folder_is_not_a_label(tmp_path):
    dirs = make_kitti(tmp_path, {"a": ["0 0.5 0.5 0.2 0.2"]})
    (dirs[1] / "classes.txt").write_text("car\n")
    dataset = read_yolo(*dirs, names=dirs[1] / "classes.txt", classes=None)
    assert dataset.problems.counts == {}


# ------------------------------------------------------------------------------------ round trips

def test_kitti_to_coco_to_kitti_keeps_boxes_classes_and_ignore_regions(kitti, tmp_path):
    original = read_kitti(*kitti, classes=None)
    write_coco(original, tmp_path / "out.json")
    via_coco = read_coco(kitti[0], tmp_path / "out.json", classes=None)
    assert via_coco.classes == original.classes  # DontCare category is not a class
    write_kitti(via_coco, tmp_path / "back")
    back = read_kitti(kitti[0], tmp_path / "back", classes=None)
    assert_same_boxes(original, back)
    np.testing.assert_allclose(by_stem(back)["000001"].ignore, by_stem(original)["000001"].ignore, atol=1e-3)


def test_kitti_to_yolo_to_kitti_is_within_a_thousandth_of_a_pixel(tmp_path):
    dirs = make_kitti(tmp_path / "src", {"a": [kitti_row("car", 10.37, 5.11, 30.93, 47.99),
                                               kitti_row("bus", 0.01, 0.5, 63.2, 20.123)]})
    original = read_kitti(*dirs, classes=None)
    summary = write_yolo(original, tmp_path / "yolo", tmp_path / "names.txt")
    assert summary == {"label_files": 1, "ignore_regions_dropped": 0}
    via_yolo = read_yolo(dirs[0], tmp_path / "yolo", tmp_path / "names.txt", classes=None)
    write_kitti(via_yolo, tmp_path / "back")
    assert_same_boxes(original, read_kitti(dirs[0], tmp_path / "back", classes=None), tolerance=1e-3)


def test_predictions_round_trip_with_scores_through_all_formats(tmp_path):
    dirs = make_kitti(tmp_path / "src", {"a": [kitti_row("car", 1, 2, 11, 12, 0.875)]})
    original = read_kitti(*dirs, classes=["car"])
    write_kitti(original, tmp_path / "k")
    assert (tmp_path / "k" / "a.txt").read_text().split()[-1] == "0.875"
    write_coco(original, tmp_path / "c.json")
    write_yolo(original, tmp_path / "y", tmp_path / "names.yaml")
    for dataset in (read_kitti(dirs[0], tmp_path / "k", ["car"]), read_coco(dirs[0], tmp_path / "c.json", ["car"]),
                    read_yolo(dirs[0], tmp_path / "y", tmp_path / "names.yaml", ["car"])):
        np.testing.assert_allclose(dataset.items[0].scores, [0.875])
        assert_same_boxes(original, dataset)
