"""The bad-label corpus through the detection CLIs (detectnet_v2; yolo_v4_tiny reads it with the same code):

Every case ends in one of two ways: a one- or two-line `tkit: error:` naming the file, line or key
and the fix (exit code 2, no traceback), or a run that finishes and counts the problem under
`data_problems` (label rows and files) or `skipped_images` (images that fail to decode) in
metrics.json and in its log. Data: `kitti_digits` at 64x64 pixels, classes spelled as words
(det_helpers.build_named_kitti); one epoch, every split in one batch.

The corpus training run is a real `python -m transferkit` subprocess (what a user runs); the other
verbs run in this process through `transferkit.cli.main`, which is the same code after argv.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from crash_helpers import child_env
from det_helpers import (
    BAD_KITTI_COUNTS, BAD_KITTI_ROWS, BAD_KITTI_UNMAPPED, CLASSES_ARG, DN_FAST, TRUNCATED, UNREADABLE, add_bad_kitti,
    build_named_kitti, data_args, kitti_row, write_coco,
)
from rel_helpers import CliResult, read_json, truncated_jpeg

from transferkit.cli import main

CLASSES = ["zero", "one", "two", "nine"]


@pytest.fixture
def dn(capsys):
    """dn(verb, *argv) -> CliResult; runs `tkit detectnet_v2 <verb> ...` in this process."""
    def run(*argv) -> CliResult:
        capsys.readouterr()
        rc = main(["detectnet_v2", *map(str, argv)])
        captured = capsys.readouterr()
        return CliResult(rc, captured.out, captured.err)
    return run


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """Pristine named KITTI set: 6 train and 3 val images. Tests copy what they change."""
    return build_named_kitti(tmp_path_factory.mktemp("det_clean"), num_train=6, num_val=3)


def _copy(src: Path, dst: Path) -> tuple[Path, Path]:
    shutil.copytree(src, dst)
    return dst / "images", dst / "labels"


def _names_in(labels: Path) -> Counter:
    """Label names as written, row by row, over every .txt file in `labels` (undecodable bytes replaced)."""
    rows = (row for f in labels.glob("*.txt") for row in f.read_text("utf-8", errors="replace").splitlines())
    return Counter(row.split()[0] for row in rows)


@pytest.fixture(scope="module")
def corpus(clean, tmp_path_factory, _session_home):
    """Train the corpus once, as a subprocess: the bad-label set as train, val with an untrained class."""
    root = tmp_path_factory.mktemp("det_corpus")
    images, labels = _copy(clean / "train", root / "train")
    val_images, val_labels = _copy(clean / "val", root / "val")
    first_rows = len((labels / "000000.txt").read_text("utf-8").splitlines())
    where = add_bad_kitti(images, labels)
    where["first_rows"] = first_rows
    with open(val_labels / "000000.txt", "a", encoding="utf-8") as f:
        f.write(kitti_row("three", 3, 3, 30, 30) + "\n")  # a class never seen in training
    results = root / "run"
    cmd = [sys.executable, "-m", "transferkit", "detectnet_v2", "train", "-r", str(results),
           *data_args(images, labels, val_images, val_labels), *DN_FAST, CLASSES_ARG]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=300)
    return {"proc": proc, "results": results, "images": images, "labels": labels, "val_images": val_images,
            "val_labels": val_labels, **where}


def _problems(metrics: dict, split: str) -> dict:
    return metrics["data_problems"][split]


def _expected_missing_classes(labels: Path) -> int:
    present = {n.lower() for n in _names_in(labels)}
    return sum(c not in present for c in CLASSES)


# -- train (subprocess) -------------------------------------------------------------------------------

def test_train_on_the_corpus_finishes_without_a_traceback(corpus):
    proc = corpus["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "tkit: error" not in proc.stderr


def test_train_counts_every_bad_row_and_file_in_metrics_json(corpus):
    metrics = read_json(corpus["results"] / "metrics.json")
    train = _problems(metrics, "train")
    assert train["counts"] == BAD_KITTI_COUNTS
    assert train["unmapped_classes"] == BAD_KITTI_UNMAPPED
    assert metrics["classes"] == CLASSES


def test_each_bad_row_is_named_by_file_and_line(corpus):
    examples = _problems(read_json(corpus["results"] / "metrics.json"), "train")["examples"]
    first, n = corpus["first_label"], corpus["first_rows"]
    for line, kind in enumerate(["wrong_field_count", "non_numeric", "inverted_box", "outside_image"], n + 1):
        assert examples[kind] == [examples[kind][0]] and examples[kind][0].startswith(f"{first}:{line}: "), kind
    assert examples["case_insensitive_match"][0].startswith(f"{first}:{n + BAD_KITTI_ROWS}: ")
    assert "'Zero' counted as class 'zero'" in examples["case_insensitive_match"][0]
    assert examples["non_numeric"][0].endswith("column 5 'ten' is not a finite number")
    assert "outside the 64x64 image" in examples["outside_image"][0]


def test_each_bad_file_is_named_with_what_happened_to_its_image(corpus):
    examples = _problems(read_json(corpus["results"] / "metrics.json"), "train")["examples"]
    assert examples["label_not_utf8"][0].startswith(f"{corpus['not_utf8']}: byte ")
    assert "re-save it as UTF-8" in examples["label_not_utf8"][0]
    assert examples["label_without_image"][0].startswith(str(corpus["orphan"]))
    assert examples["missing_label_file"][0].startswith(str(corpus["no_label"]))
    assert "read as no objects" in examples["missing_label_file"][0]
    assert sorted(e.split(":")[0] for e in examples["unreadable_image"]) == sorted(map(str, corpus["unreadable"]))
    assert "'nine'" in examples["class_without_objects"][0]


def test_truncated_image_is_listed_in_skipped_images(corpus):
    skipped = read_json(corpus["results"] / "metrics.json")["skipped_images"]
    assert skipped["count"] == 1
    assert list(skipped["files"]) == [str(corpus["truncated"])]
    assert "truncated" in skipped["files"][str(corpus["truncated"])]


def test_val_class_never_seen_in_training_is_counted_not_scored(corpus):
    metrics = read_json(corpus["results"] / "metrics.json")
    val = _problems(metrics, "val")
    assert val["unmapped_classes"] == {"three": 1}
    assert val["counts"] == {"class_without_objects": _expected_missing_classes(corpus["val_labels"])}
    assert "three" not in metrics["classes"]


def test_run_summary_names_every_kind_of_problem(corpus):
    log = (corpus["results"] / "log.txt").read_text(encoding="utf-8")
    for kind in BAD_KITTI_COUNTS:
        assert f"x {kind} (e.g. " in log, kind
    assert "class 'zebra' map to no trained class" in log and "class 'three' map to no trained class" in log
    assert "skipped 1 image(s) that could not be read" in log


def test_train_images_counts_only_the_images_actually_used(corpus):
    metrics = read_json(corpus["results"] / "metrics.json")
    assert metrics["train_images"] == 5  # 000000, 000002-000005; not 000001 (label not UTF-8), not truncated.jpg


# -- evaluate / inference / dataset_convert (in this process) --------------------------------------

def test_evaluate_on_the_corpus_counts_the_same_problems(corpus, tmp_path, dn):
    assert corpus["proc"].returncode == 0
    result = dn("evaluate", "-r", tmp_path / "eval", "-m", corpus["results"] / "best.ckpt",
                f"data.val_images={corpus['images']}", f"data.val_labels={corpus['labels']}", *DN_FAST)
    assert result.rc == 0, result.err
    assert "Traceback" not in result.err + result.out
    metrics = read_json(tmp_path / "eval" / "metrics.json")
    val = metrics["data_problems"]["val"]
    assert val["counts"] == BAD_KITTI_COUNTS and val["unmapped_classes"] == BAD_KITTI_UNMAPPED
    assert list(metrics["skipped_images"]["files"]) == [str(corpus["truncated"])]
    assert metrics["num_images"] == 5  # 6 listed, 1 truncated
    zero_objects = sum(n for name, n in _names_in(corpus["labels"]).items() if name.lower() == "zero")
    # 'zero' objects scored: every 'zero'/'Zero' row but the 7-field one and the one outside the image
    assert metrics["num_gt"]["zero"] == zero_objects - 2


def test_inference_on_the_corpus_images_keeps_every_good_image_and_lists_the_bad(corpus, tmp_path, dn):
    assert corpus["proc"].returncode == 0
    result = dn("inference", "-r", tmp_path / "inf", "-m", corpus["results"] / "best.ckpt",
                f"inference.images={corpus['images']}", *DN_FAST)
    assert result.rc == 0, result.err
    good = sorted(p for p in corpus["images"].iterdir() if p.name not in (TRUNCATED, *UNREADABLE))
    assert len(good) == 6
    records = read_json(tmp_path / "inf" / "detections.json")
    assert sorted(r["image"] for r in records) == [str(p) for p in good]
    assert sorted(p.stem for p in (tmp_path / "inf" / "labels").iterdir()) == [p.stem for p in good]
    summary = read_json(tmp_path / "inf" / "inference.json")
    assert summary["images"] == 6
    assert set(summary["skipped_images"]["files"]) == {str(corpus["images"] / n) for n in (TRUNCATED, *UNREADABLE)}


def test_dataset_convert_of_the_corpus_reports_every_problem_and_writes_only_good_objects(corpus, tmp_path, dn):
    out = tmp_path / "coco"
    result = dn("dataset_convert", *data_args(corpus["images"], corpus["labels"]), CLASSES_ARG,
                "dataset_convert.output_format=coco", f"dataset_convert.output_dir={out}")
    assert result.rc == 0, result.err
    report = read_json(out / "convert_report.json")
    assert report["problems"]["counts"] == BAD_KITTI_COUNTS
    assert report["problems"]["unmapped_classes"] == BAD_KITTI_UNMAPPED
    coco = read_json(out / "train.json")
    kept_rows = sum(len(f.read_text("utf-8").splitlines()) for f in corpus["labels"].glob("*.txt")
                    if f.stem in {"000000", "000003", "000004", "000005", "truncated"})
    assert len(coco["annotations"]) == report["objects"] == kept_rows - (BAD_KITTI_ROWS - 1)
    # the reader does not decode pixels: the truncated image is converted (and found when used)
    assert sorted(i["file_name"] for i in coco["images"]) == ["000000.png", "000002.png", "000003.png",
                                                              "000004.png", "000005.png", TRUNCATED]


def _val_as_coco(clean: Path, path: Path) -> int:
    """Write the clean val split as COCO at `path`, plus bad annotations and image entries of each kind.

    Returns the number of good annotations."""
    images, annotations = [], []
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(["zero", "one", "two"])]
    ids = {c["name"]: c["id"] for c in categories}
    for image_id, label in enumerate(sorted((clean / "val" / "labels").glob("*.txt")), 1):
        images.append({"id": image_id, "file_name": f"{label.stem}.png", "width": 64, "height": 64})
        for row in label.read_text("utf-8").splitlines():
            fields = row.split()
            name, (x1, y1, x2, y2) = fields[0], map(float, fields[4:8])
            annotations.append({"image_id": image_id, "category_id": ids[name], "bbox": [x1, y1, x2 - x1, y2 - y1]})
    good = len(annotations)
    bad = [
        {"image_id": 1, "category_id": 1, "bbox": [1, 2, 3]},  # bad_annotation: 3 numbers
        {"image_id": 1, "category_id": 1, "bbox": [1, "2", 3, 4]},  # bad_annotation: a string
        {"image_id": [1], "category_id": 1, "bbox": [1, 2, 3, 4]},  # bad_annotation: a list id
        {"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "iscrowd": "yes"},  # bad_annotation
        {"image_id": 1, "category_id": 99, "bbox": [1, 2, 3, 4]},  # unknown_category
        {"image_id": 77, "category_id": 1, "bbox": [1, 2, 3, 4]},  # annotation_without_image
        {"image_id": 1, "category_id": 1, "bbox": [30, 2, -10, 4]},  # inverted_box (negative width)
        {"image_id": 1, "category_id": 1, "bbox": [70, 70, 5, 5]},  # outside_image
        {"image_id": 4, "category_id": 1, "bbox": [1, 2, 3, 4]},  # its image is missing: not counted twice
    ]
    images += [{"id": 4, "file_name": "gone.png"}, {"id": 1, "file_name": "000001.png"}]  # image_missing, duplicate
    images[1]["width"] = 640  # size_mismatch: the header wins
    for i, ann in enumerate(annotations + bad, 1):
        ann["id"] = i
    write_coco(path, images, annotations + bad, categories)
    return good


def test_coco_with_bad_annotations_is_converted_with_each_one_counted(clean, tmp_path, dn):
    good = _val_as_coco(clean, tmp_path / "val.json")
    out = tmp_path / "yolo"
    result = dn("dataset_convert", "data.format=coco", f"data.train_images={clean / 'val' / 'images'}",
                f"data.train_labels={tmp_path / 'val.json'}", "dataset_convert.output_format=yolo",
                f"dataset_convert.output_dir={out}")
    assert result.rc == 0, result.err
    report = read_json(out / "convert_report.json")
    assert report["problems"]["counts"] == {"bad_annotation": 5, "unknown_category": 1, "annotation_without_image": 1,
                                            "inverted_box": 1, "outside_image": 1, "image_missing": 1,
                                            "size_mismatch": 1}
    examples = report["problems"]["examples"]
    assert any("annotations[" in e and "image_id must be a number or a string" in e for e in examples["bad_annotation"])
    assert any("image id 1 is listed twice" in e for e in examples["bad_annotation"])
    rows = [r for f in (out / "train" / "labels").glob("*.txt") for r in f.read_text("utf-8").splitlines()]
    assert len(rows) == report["objects"] == good


def test_yolo_rows_with_class_ids_out_of_range_are_counted_by_evaluate(corpus, clean, tmp_path, dn):
    assert corpus["proc"].returncode == 0
    out = tmp_path / "yolo"
    result = dn("dataset_convert", *data_args(clean / "val" / "images", clean / "val" / "labels"), CLASSES_ARG,
                "dataset_convert.output_format=yolo", f"dataset_convert.output_dir={out}")
    assert result.rc == 0, result.err
    labels = out / "train" / "labels"
    with open(labels / "000000.txt", "a", encoding="utf-8") as f:
        f.write("7 0.5 0.5 0.2 0.2\n-1 0.5 0.5 0.2 0.2\n1.5 0.5 0.5 0.2 0.2\n0 0.5 0.5\n0 1.8 1.8 0.2 0.2\n")
    result = dn("evaluate", "-r", tmp_path / "eval", "-m", corpus["results"] / "best.ckpt", "data.format=yolo",
                f"data.yolo_names={out / 'names.txt'}", f"data.val_images={out / 'train' / 'images'}",
                f"data.val_labels={labels}", *DN_FAST)
    assert result.rc == 0, result.err
    val = read_json(tmp_path / "eval" / "metrics.json")["data_problems"]["val"]
    assert val["counts"] == {"unknown_class_id": 3, "wrong_field_count": 1, "outside_image": 1,
                             "class_without_objects": _expected_missing_classes(clean / "val" / "labels")}
    assert val["examples"]["unknown_class_id"][0] == f"{labels / '000000.txt'}:{1 + _rows(clean, '000000')}: " \
                                                     "class id 7 is not in 0..3"


def _rows(clean: Path, stem: str) -> int:
    return len((clean / "val" / "labels" / f"{stem}.txt").read_text("utf-8").splitlines())


# -- a val set with no objects, bad images in a dropped batch --------------------------------------

def test_val_set_with_no_objects_trains_and_says_map_is_undefined(clean, tmp_path, dn):
    val_images, val_labels = _copy(clean / "val", tmp_path / "val")
    for f in val_labels.glob("*.txt"):
        f.write_text("", encoding="utf-8")
    result = dn("train", "-r", tmp_path / "run", *data_args(clean / "train" / "images", clean / "train" / "labels",
                                                            val_images, val_labels), *DN_FAST)
    assert result.rc == 0, result.err
    metrics = read_json(tmp_path / "run" / "metrics.json")
    assert any("validation labels hold no objects" in w and "undefined" in w for w in metrics["warnings"])
    assert metrics["data_problems"]["val"]["counts"] == {}  # no per-class noise on top of that warning


def test_evaluate_on_a_val_set_with_no_objects_warns_in_metrics_json(corpus, clean, tmp_path, dn):
    val_images, val_labels = _copy(clean / "val", tmp_path / "val")
    for f in val_labels.glob("*.txt"):
        f.write_text("", encoding="utf-8")
    result = dn("evaluate", "-r", tmp_path / "eval", "-m", corpus["results"] / "best.ckpt",
                f"data.val_images={val_images}", f"data.val_labels={val_labels}", *DN_FAST)
    assert result.rc == 0, result.err
    metrics = read_json(tmp_path / "eval" / "metrics.json")
    assert any("no objects" in w for w in metrics.get("warnings", [])), metrics.get("mAP")


def test_truncated_images_in_a_dropped_batch_are_still_reported(clean, tmp_path, dn):
    images, labels = _copy(clean / "train", tmp_path / "train")
    for i in range(9):  # 6 + 9 = 15 images, batch 8, drop_last: at most 8 are decoded
        (images / f"truncated_{i}.jpg").write_bytes(truncated_jpeg(i))
        (labels / f"truncated_{i}.txt").write_text(kitti_row("one", 4, 4, 30, 30) + "\n", encoding="utf-8")
    result = dn("train", "-r", tmp_path / "run", *data_args(images, labels, clean / "val" / "images",
                                                            clean / "val" / "labels"), *DN_FAST, "train.batch_size=8")
    assert result.rc == 0, result.err
    assert read_json(tmp_path / "run" / "metrics.json")["skipped_images"]["count"] == 9


# -- errors: exit 2, one or two lines, the file or key and the fix ---------------------------------

def test_labels_that_hold_only_an_untrained_class_are_refused(clean, tmp_path, dn):
    images, labels = _copy(clean / "train", tmp_path / "train")
    for f in labels.glob("*.txt"):
        f.write_text(kitti_row("zebra", 1, 1, 20, 20) + "\n", encoding="utf-8")
    result = dn("train", "-r", tmp_path / "run", *data_args(images, labels, clean / "val" / "images",
                                                            clean / "val" / "labels"), "data.classes=[zero,one,two]")
    result.assert_user_error(str(labels), "zebra (6)", "class_mapping")


def test_val_objects_all_of_a_class_never_trained_are_refused(corpus, clean, tmp_path, dn):
    assert corpus["proc"].returncode == 0
    val_images, val_labels = _copy(clean / "val", tmp_path / "val")
    for f in val_labels.glob("*.txt"):
        f.write_text(kitti_row("three", 1, 1, 20, 20) + "\n", encoding="utf-8")
    result = dn("evaluate", "-r", tmp_path / "eval", "-m", corpus["results"] / "best.ckpt",
                f"data.val_images={val_images}", f"data.val_labels={val_labels}", *DN_FAST)
    result.assert_user_error(str(val_labels), "three (3)", str(CLASSES))


def test_training_labels_without_any_object_are_refused(clean, tmp_path, dn):
    images, labels = _copy(clean / "train", tmp_path / "train")
    for f in labels.glob("*.txt"):
        f.write_text("", encoding="utf-8")
    result = dn("train", "-r", tmp_path / "run", *data_args(images, labels, clean / "val" / "images",
                                                            clean / "val" / "labels"))
    # names the training labels, whichever split is read first (the val reader has no classes to use)
    result.assert_user_error("no objects", "training labels")


@pytest.mark.parametrize("empty", ["images", "labels"])
def test_empty_dataset_folder_is_refused_naming_it(clean, tmp_path, dn, empty):
    images, labels = _copy(clean / "train", tmp_path / "train")
    folder = images if empty == "images" else labels
    shutil.rmtree(folder)
    folder.mkdir()
    result = dn("train", "-r", tmp_path / "run", *data_args(images, labels, clean / "val" / "images",
                                                            clean / "val" / "labels"))
    words = ["no images in", str(images)] if empty == "images" else [str(labels), "holds no .txt label files"]
    result.assert_user_error(*words)


def test_labels_named_unlike_the_images_are_refused(clean, tmp_path, dn):
    images, labels = _copy(clean / "train", tmp_path / "train")
    for f in list(labels.glob("*.txt")):
        f.rename(f.with_name(f"frame_{f.name}"))
    result = dn("dataset_convert", *data_args(images, labels), f"dataset_convert.output_dir={tmp_path / 'out'}")
    result.assert_user_error(str(labels), "named like an image", "000000.txt")


@pytest.mark.parametrize("text, words", [
    ('{"images": [\n  {"id": 1,, "file_name": "a.png"}]}', [":2:12: not valid JSON"]),
    ('[{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.9}]', ["results list"]),
    ('{"images": [{"id": [1], "file_name": "000000.png"}], "annotations": [], "categories": []}',
     ["images[0].id must be a number or a string"]),
    ('{"images": [], "annotations": [], "categories": [{"id": 1, "name": null}]}',
     ["categories[0].name must be a non-empty string"]),
], ids=["invalid_json", "results_list", "list_as_image_id", "null_category_name"])
def test_broken_coco_json_is_refused_naming_the_file_and_the_place(clean, tmp_path, dn, text, words):
    path = tmp_path / "instances.json"
    path.write_text(text, encoding="utf-8")
    result = dn("dataset_convert", "data.format=coco", f"data.train_images={clean / 'val' / 'images'}",
                f"data.train_labels={path}", f"dataset_convert.output_dir={tmp_path / 'out'}")
    result.assert_user_error(str(path), *words)


def test_yolo_names_that_are_not_yaml_name_the_line_and_column(clean, tmp_path, dn):
    names = tmp_path / "data.yaml"
    names.write_text("nc: 2\nnames: [zero, one\n", encoding="utf-8")
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "000000.txt").write_text("0 0.5 0.5 0.2 0.2\n", encoding="utf-8")
    result = dn("dataset_convert", "data.format=yolo", f"data.yolo_names={names}",
                *data_args(clean / "val" / "images", labels), f"dataset_convert.output_dir={tmp_path / 'out'}")
    result.assert_user_error(f"{names}:3:1", "not valid YAML")


def test_missing_yolo_names_file_names_the_key(clean, tmp_path, dn):
    result = dn("dataset_convert", "data.format=yolo", f"data.yolo_names={tmp_path / 'names.txt'}",
                *data_args(clean / "val" / "images", clean / "val" / "labels"),
                f"dataset_convert.output_dir={tmp_path / 'out'}")
    result.assert_user_error("data.yolo_names", str(tmp_path / "names.txt"))


def test_yolo_v4_tiny_counts_the_corpus_exactly_as_detectnet_v2(corpus, tmp_path, capsys):
    """Both detection tasks read data through the same code: the same corpus gives the same counts, the same
    skipped image, and no traceback, through `yolo_v4_tiny train` and `evaluate` (mosaic on)."""
    args = [*data_args(corpus["images"], corpus["labels"], corpus["val_images"], corpus["val_labels"]),
            *[a for a in DN_FAST if not a.startswith("data.image")], "data.image_width=64", "data.image_height=64",
            CLASSES_ARG, "data.augmentation.mosaic_prob=1.0"]
    run = tmp_path / "yolo"
    assert main(["yolo_v4_tiny", "train", "-r", str(run), *args]) == 0
    dn_metrics, yolo_metrics = read_json(corpus["results"] / "metrics.json"), read_json(run / "metrics.json")
    assert yolo_metrics["data_problems"] == dn_metrics["data_problems"]
    assert yolo_metrics["skipped_images"] == dn_metrics["skipped_images"]
    assert yolo_metrics["train_images"] == dn_metrics["train_images"]
    ev = tmp_path / "yolo_eval"
    assert main(["yolo_v4_tiny", "evaluate", "-r", str(ev), "-m", str(run / "best.ckpt"), *args]) == 0
    assert read_json(ev / "metrics.json")["data_problems"]["val"] == dn_metrics["data_problems"]["val"]
    assert "Traceback" not in capsys.readouterr().err
