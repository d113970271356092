"""Two-stage inference: a DetectNet_v2 trained in the test finds the boxes (from its .ckpt and its .onnx), the
keypoint model crops them; the objects are exactly the detector's own inference boxes of the chosen class."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kp_task_helpers import FAST, tkit

pytestmark = pytest.mark.slow

DN = ["data.format=coco", "data.image_width=96", "data.image_height=80", "train.batch_size=4", "train.num_workers=0",
      "train.epochs=1", "train.histograms=false", "model.pretrained=false", "evaluation.batch_size=8"]
THRESHOLD = 0.01  # an untrained detector's scores are low: keep what it finds
LOOSE = ["postprocess.coverage_threshold=0.0", "postprocess.clustering_algorithm=nms",
         "postprocess.minimum_bounding_box_height=0"]


@pytest.fixture(scope="module")
def models(kpset, kp_trained, tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("kpdet")
    data = kpset
    detector = root / "dn"
    assert tkit("detectnet_v2", "train", "-r", detector, f"data.train_images={data / 'train'}",
                f"data.train_labels={data / 'train.json'}", f"data.val_images={data / 'val'}",
                f"data.val_labels={data / 'val.json'}", *DN) == 0
    return data, detector, kp_trained


def detector_boxes(detections: Path, threshold: float) -> dict[str, int]:
    counts = {}
    for row in json.loads(detections.read_text()):
        kept = [d for d in row["detections"] if d["score"] >= threshold and d["class"] == "figure"]
        counts[Path(row["image"]).name] = len(kept)
    return counts


def test_keypoints_after_the_detector_from_ckpt_and_onnx(models, tmp_path):
    data, detector, kp = models
    own = tmp_path / "dn_inf"
    assert tkit("detectnet_v2", "inference", "-r", own, "-m", detector / "best.ckpt", *DN,
                f"inference.images={data / 'val'}", f"inference.score_threshold={THRESHOLD}", *LOOSE,
                "inference.annotate=false") == 0
    expected = detector_boxes(own / "detections.json", THRESHOLD)
    assert sum(expected.values()) > 0, "the tiny detector found nothing to chain"

    runs = {}
    assert tkit("detectnet_v2", "export", "-r", tmp_path / "dn_onnx", "-m", detector / "best.ckpt", *DN,
                f"data.train_images={data / 'train'}", f"data.train_labels={data / 'train.json'}",
                f"data.val_images={data / 'val'}", f"data.val_labels={data / 'val.json'}") == 0
    for name, model in (("ckpt", detector / "best.ckpt"), ("onnx", tmp_path / "dn_onnx" / "model.onnx")):
        out = runs[name] = tmp_path / f"kp_{name}"
        assert tkit("keypoints", "inference", "-r", out, "-m", kp / "best.ckpt", *FAST,
                    f"inference.images={data / 'val'}", f"inference.detector={model}",
                    "inference.detector_class=[figure]", f"inference.detector_threshold={THRESHOLD}",
                    f"inference.detector_overrides=[{','.join(LOOSE)}]") == 0
        summary = json.loads((out / "inference.json").read_text())
        assert summary["boxes_from"] == f"detector {model}" and summary["images"] == 4
        results = json.loads((out / "keypoints.json").read_text())
        found: dict[str, int] = {}
        for r in results:
            found[Path(r["file_name"]).name] = found.get(Path(r["file_name"]).name, 0) + 1
            assert len(r["keypoints"]) == 15 and len(r["bbox"]) == 4
        assert {k: v for k, v in found.items()} == {k: v for k, v in expected.items() if v}
        assert len(list((out / "annotated").iterdir())) == 4


def test_an_unknown_detector_class_or_a_non_detector_is_refused(models, tmp_path, capsys):
    data, detector, kp = models
    assert tkit("keypoints", "inference", "-r", tmp_path / "a", "-m", kp / "best.ckpt", *FAST,
                f"inference.images={data / 'val'}", f"inference.detector={detector / 'best.ckpt'}",
                "inference.detector_class=[person]") == 2
    assert "inference.detector_class" in capsys.readouterr().err
    assert tkit("keypoints", "inference", "-r", tmp_path / "b", "-m", kp / "best.ckpt", *FAST,
                f"inference.images={data / 'val'}", f"inference.detector={kp / 'best.ckpt'}") == 2
    assert "not a detector" in capsys.readouterr().err
