"""An EXIF-rotated JPEG with KITTI labels, end to end: every stage uses the image as displayed.

The JPEG stores its pixels 64 wide x 96 high; its EXIF orientation (6 in one file, 8 in the other)
shows it 96 wide x 64 high with a white square at WHITE_BOX, and the labels are written in those
displayed coordinates (data/boxes.py). Checked: the size the reader clips boxes against, the pixels
and boxes that reach the network (DetectionData, no augmentation), the boxes `inference` writes
(detections.json and KITTI labels, in the original image's pixels), the annotated copy, and the
sizes `dataset_convert` records. Had any stage used the stored orientation, the white square and
the boxes would disagree by a quarter turn and the sizes would be swapped.

Inference coordinates are checked without a trained detector: the task's `predict` is replaced by
one that returns the bounding box of the white pixels in the network input, so the written box
must come back to WHITE_BOX in the original image's pixels.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from det_helpers import DN_FAST, SHOWN_H, SHOWN_W, WHITE_BOX, data_args, exif_rotated_jpeg, kitti_row
from rel_helpers import read_json

from transferkit.cli import main
from transferkit.vision.boxes import ImageBoxes
from transferkit.vision.formats import read_kitti
from transferkit.vision.images import image_size, load_image

INPUT = 64  # network input, square: x is scaled by 64/96, y by 1
CLIPPED_ROW = (60, 50, 95, 70)  # inside the displayed width (96) but below its height (64): clipped to y2=64
STEMS = ("exif6", "exif8")


@pytest.fixture(scope="module")
def exif_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("exif")
    images, labels = root / "images", root / "labels"
    images.mkdir()
    labels.mkdir()
    for stem, orientation in zip(STEMS, (6, 8)):
        (images / f"{stem}.jpg").write_bytes(exif_rotated_jpeg(orientation))
        (labels / f"{stem}.txt").write_text(kitti_row("square", *WHITE_BOX) + "\n" + kitti_row("square", *CLIPPED_ROW)
                                            + "\n", encoding="utf-8")
    return images, labels


@pytest.fixture(scope="module")
def exif_model(exif_set, tmp_path_factory, _session_home):
    """A one-epoch detector trained on the two EXIF images (its weights do not matter here)."""
    images, labels = exif_set
    results = tmp_path_factory.mktemp("exif_train") / "run"
    rc = main(["detectnet_v2", "train", "-r", str(results), *map(str, data_args(images, labels, images, labels)),
               *DN_FAST])
    assert rc == 0
    return results / "best.ckpt"


def white_box(image: np.ndarray) -> tuple[float, float, float, float]:
    """Continuous x1, y1, x2, y2 of the pixels brighter than mid-grey in an HxW array."""
    rows, cols = np.nonzero(image > 0.5)
    return float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)


def test_the_files_really_are_stored_rotated(exif_set):
    images, _ = exif_set
    for stem in STEMS:
        path = images / f"{stem}.jpg"
        with Image.open(path) as im:
            assert im.size == (SHOWN_H, SHOWN_W)  # stored 64 x 96
        shown = load_image(path)
        assert shown.size == image_size(path) == (SHOWN_W, SHOWN_H)
        assert white_box(np.asarray(shown.convert("L")) / 255.0) == WHITE_BOX


def test_reader_clips_against_the_displayed_size(exif_set):
    dataset = read_kitti(*exif_set, classes=["square"])
    for item in dataset.items:
        assert (item.width, item.height) == (SHOWN_W, SHOWN_H)
        np.testing.assert_allclose(item.boxes, [WHITE_BOX, (60, 50, 95, 64)])
    assert dataset.problems.counts == {"clipped": 2}  # y2=70 > 64, once per file; x2=95 < 96 is kept


def test_training_pixels_and_boxes_agree(exif_set):
    from transferkit.api import _spec

    task, spec = _spec("detectnet_v2", None, [*data_args(*exif_set, *exif_set), *DN_FAST])
    data = task.build_data(spec)
    images, targets, bad = next(iter(data.val_dataloader()))  # resized, not augmented
    assert bad == [] and len(targets) == 2
    mean, std = torch.tensor(data.mean).view(3, 1, 1), torch.tensor(data.std).view(3, 1, 1)
    for image, target in zip(images, targets):
        assert target.original_size == (SHOWN_W, SHOWN_H)
        expected = np.array(WHITE_BOX) * [INPUT / SHOWN_W, 1, INPUT / SHOWN_W, 1]
        np.testing.assert_allclose(target.boxes[0], expected, atol=1e-4)
        pixels = (image * std + mean).mean(0).numpy()
        np.testing.assert_allclose(white_box(pixels), expected, atol=1.0)


def _predict_the_white_square(spec, predictor, images, targets):
    mean = torch.tensor(predictor.meta.image.mean).view(3, 1, 1)
    std = torch.tensor(predictor.meta.image.std).view(3, 1, 1)
    out = []
    for image, target in zip(images, targets):
        box = white_box((image * std + mean).mean(0).numpy())
        out.append(ImageBoxes(target.image, [box], [0], scores=[0.99], width=target.width, height=target.height))
    return out


def test_inference_writes_boxes_in_the_displayed_images_pixels(exif_set, exif_model, tmp_path, monkeypatch):
    from transferkit.tasks.detection.detectnet_v2 import TASK

    monkeypatch.setattr(TASK, "predict", _predict_the_white_square)
    images, _ = exif_set
    out = tmp_path / "inf"
    rc = main(["detectnet_v2", "inference", "-r", str(out), "-m", str(exif_model), f"inference.images={images}",
               *DN_FAST, "inference.annotate=true"])
    assert rc == 0
    records = {r["image"]: r["detections"] for r in read_json(out / "detections.json")}
    assert sorted(records) == [str(images / f"{s}.jpg") for s in STEMS]
    for stem in STEMS:
        (detection,) = records[str(images / f"{stem}.jpg")]
        # 1 input pixel = 1.5 displayed pixels across, 1 down; JPEG edges blur by up to one more
        np.testing.assert_allclose(detection["box"], WHITE_BOX, atol=2.0)
        (row,) = (out / "labels" / f"{stem}.txt").read_text(encoding="utf-8").splitlines()
        np.testing.assert_allclose([float(v) for v in row.split()[4:8]], WHITE_BOX, atol=2.0)
        with Image.open(out / "annotated" / f"{stem}.png") as annotated:
            assert annotated.size == (SHOWN_W, SHOWN_H)


def test_dataset_convert_records_the_displayed_size(exif_set, tmp_path):
    for fmt in ("coco", "yolo"):
        rc = main(["detectnet_v2", "dataset_convert", *map(str, data_args(*exif_set)), "data.classes=[square]",
                   f"dataset_convert.output_format={fmt}", f"dataset_convert.output_dir={tmp_path / fmt}"])
        assert rc == 0
    coco = read_json(tmp_path / "coco" / "train.json")
    assert {(i["width"], i["height"]) for i in coco["images"]} == {(SHOWN_W, SHOWN_H)}
    x1, y1, x2, y2 = WHITE_BOX
    assert [x1, y1, x2 - x1, y2 - y1] in [a["bbox"] for a in coco["annotations"]]
    for stem in STEMS:
        first = (tmp_path / "yolo" / "train" / "labels" / f"{stem}.txt").read_text(encoding="utf-8").splitlines()[0]
        expected = [0, (x1 + x2) / 2 / SHOWN_W, (y1 + y2) / 2 / SHOWN_H, (x2 - x1) / SHOWN_W, (y2 - y1) / SHOWN_H]
        np.testing.assert_allclose([float(v) for v in first.split()], expected, atol=1e-6)
