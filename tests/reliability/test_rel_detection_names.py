"""Detection inference and names: a COCO class named `traffic light` trains, infers, is written to KITTI
(as `traffic_light`: KITTI rows are space-separated) and reads back as itself; two images whose label
files would share a name are refused before anything is written.

One detector (detectnet_v2, one epoch at 64x64) is trained on a COCO set whose class `one` is renamed
`traffic light`; inference replaces its predictions with one fixed box, so the tests do not depend on
what the detector learned."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from det_helpers import DN_FAST, build_named_kitti
from rel_helpers import CliResult, read_json

from transferkit.cli import main
from transferkit.errors import DataError
from transferkit.vision.boxes import DetectionDataset, ImageBoxes
from transferkit.vision.convert import convert_dataset, write_kitti
from transferkit.vision.formats import read_kitti

SPACED = "traffic light"
BOX = [4.0, 4.0, 30.0, 30.0]  # network-input pixels = image pixels (64x64 images, 64x64 input)


@pytest.fixture
def dn(capsys):
    def run(*argv) -> CliResult:
        capsys.readouterr()
        rc = main(["detectnet_v2", *map(str, argv)])
        captured = capsys.readouterr()
        return CliResult(rc, captured.out, captured.err)
    return run


@pytest.fixture(scope="module")
def coco_set(tmp_path_factory) -> Path:
    """ROOT/{train,val}/images and ROOT/{train,val}.json with categories zero, 'traffic light', two."""
    kitti = build_named_kitti(tmp_path_factory.mktemp("named"), num_train=4, num_val=2)
    root = tmp_path_factory.mktemp("coco_spaced")
    for split in ("train", "val"):
        convert_dataset("kitti", kitti / split / "images", kitti / split / "labels", "coco", root / split,
                        classes=["zero", "one", "two"])
        document = read_json(root / split / "train.json")
        for category in document["categories"]:
            category["name"] = SPACED if category["name"] == "one" else category["name"]
        (root / f"{split}.json").write_text(json.dumps(document), encoding="utf-8")
    return root


def coco_args(root: Path) -> list[str]:
    return ["data.format=coco", f"data.train_images={root / 'train' / 'train' / 'images'}",
            f"data.train_labels={root / 'train.json'}", f"data.val_images={root / 'val' / 'train' / 'images'}",
            f"data.val_labels={root / 'val.json'}"]


@pytest.fixture(scope="module")
def detector(coco_set, tmp_path_factory, _session_home) -> Path:
    run = tmp_path_factory.mktemp("det_spaced") / "run"
    assert main(["detectnet_v2", "train", "-r", str(run), *coco_args(coco_set), *DN_FAST]) == 0
    return run / "best.ckpt"


@pytest.fixture
def fixed_boxes(monkeypatch):
    """Every image gets one 'traffic light' box (class index 1) at BOX, score 0.9."""
    from transferkit.tasks.detection.detectnet_v2 import TASK

    def predict(spec, predictor, images, targets):
        index = list(predictor.meta.classes).index(SPACED)
        return [ImageBoxes(t.image, [BOX], [index], scores=[0.9], width=t.width, height=t.height) for t in targets]

    monkeypatch.setattr(TASK, "predict", predict)


def test_a_class_with_a_space_trains_and_infers(detector, coco_set, tmp_path, dn, fixed_boxes):
    assert SPACED in read_json(detector.parent / "metrics.json")["classes"]
    images = coco_set / "train" / "train" / "images"  # the split that has traffic lights
    out = tmp_path / "inf"
    result = dn("inference", "-r", out, "-m", detector, f"inference.images={images}", *DN_FAST,
                "inference.annotate=true")
    assert result.rc == 0, result.err
    records = read_json(out / "detections.json")
    assert {d["class"] for r in records for d in r["detections"]} == {SPACED}
    rows = [row.split() for f in sorted((out / "labels").glob("*.txt")) for row in f.read_text().splitlines()]
    assert rows and {row[0] for row in rows} == {"traffic_light"} and all(len(row) == 16 for row in rows)
    assert read_json(out / "inference.json")["kitti_names"] == {SPACED: "traffic_light"}

    # The written KITTI predictions score against the COCO ground truth as the class itself.
    result = dn("evaluate", "-r", tmp_path / "scored", *coco_args(coco_set), f"data.val_images={images}",
                f"data.val_labels={coco_set / 'train.json'}", f"evaluation.predictions={out / 'labels'}", *DN_FAST)
    assert result.rc == 0, result.err
    metrics = read_json(tmp_path / "scored" / "metrics.json")
    assert metrics["data_problems"]["predictions"]["unmapped_classes"] == {}
    assert metrics["num_pred"][SPACED] == len(records) and metrics["num_gt"][SPACED] > 0


def test_kitti_round_trip_of_a_spaced_class(coco_set, tmp_path):
    out = tmp_path / "kitti"
    report = convert_dataset("coco", coco_set / "train" / "train" / "images", coco_set / "train.json", "kitti", out)
    assert report["conversion"]["splits"]["train"]["kitti_names"] == {SPACED: "traffic_light"}
    back = read_kitti(out / "train" / "images", out / "train" / "labels", report["classes"])
    assert back.classes == report["classes"] and back.problems.unmapped_classes == {}
    assert sum(len(item.labels) for item in back.items) == report["objects"]


def test_two_classes_that_kitti_cannot_tell_apart_are_refused(tmp_path):
    item = ImageBoxes(tmp_path / "a.png", np.array([BOX], np.float32), [0], width=64, height=64)
    with pytest.raises(DataError, match="'traffic light' and 'Traffic_Light'"):
        write_kitti(DetectionDataset([SPACED, "Traffic_Light"], [item]), tmp_path / "labels")
    assert not (tmp_path / "labels").exists()


def test_clashing_image_names_are_refused_before_anything_is_written(detector, coco_set, tmp_path, dn, fixed_boxes):
    pictures = sorted((coco_set / "val" / "train" / "images").iterdir())
    images = tmp_path / "images"
    for folder, picture in (("a", pictures[0]), ("b", pictures[1])):
        (images / folder).mkdir(parents=True)
        shutil.copyfile(picture, images / folder / "x.png")
    out = tmp_path / "inf"
    result = dn("inference", "-r", out, "-m", detector, f"inference.images={images}", *DN_FAST, "inference.annotate=true")
    result.assert_user_error(str(images / "a" / "x.png"), str(images / "b" / "x.png"), "labels/x.txt", "rename")
    assert not (out / "annotated").exists() and not (out / "labels").exists()
