"""YOLOv4-tiny through the real CLI on a tiny KITTI set: kmeans -> train -> evaluate -> inference ->
prune -> retrain -> export (NMS in the ONNX graph, INT8, raw heads), with detections compared."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from transferkit.engine.meta import ModelMeta

from cli_helpers import detection_data_args as data_args, run_cli as tkit

FAST = ["data.image_width=64", "data.image_height=64", "train.batch_size=4", "train.num_workers=0",
        "train.epochs=1", "train.histograms=false", "model.pretrained=false", "evaluation.batch_size=8",
        "data.augmentation.mosaic_prob=0.5"]


@pytest.fixture(scope="module")
def anchors(kitti, tmp_path_factory) -> dict:
    run = tmp_path_factory.mktemp("km") / "kmeans"
    assert tkit("yolo_v4_tiny", "kmeans", "-r", run, *data_args(kitti), *FAST) == 0
    return yaml.safe_load((run / "anchors.yaml").read_text())["model"]


@pytest.fixture(scope="module")
def trained(kitti, anchors, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("yolo") / "train"
    assert tkit("yolo_v4_tiny", "train", "-r", run, *data_args(kitti), *FAST, "train.epochs=2",
                f"model.mid_anchor_shape={anchors['mid_anchor_shape']}",
                f"model.big_anchor_shape={anchors['big_anchor_shape']}") == 0
    return run


def test_kmeans_writes_six_sorted_anchors_that_fit_the_boxes(anchors, kitti):
    pairs = anchors["mid_anchor_shape"] + anchors["big_anchor_shape"]
    areas = [w * h for w, h in pairs]
    assert len(pairs) == 6 and areas == sorted(areas)
    # The demo digits are 20-60 % of a 64 px image: every anchor lies in that range.
    assert all(4 <= v <= 64 for pair in pairs for v in pair)


def test_train_records_losses_map_and_the_anchors_in_the_checkpoint(trained, anchors):
    lines = [json.loads(x) for x in (trained / "status.json").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1]
    assert all({"val/mAP", "train/loss", "val/box_loss", "val/obj_loss", "val/cls_loss"} <= set(r) for r in lines)
    meta = ModelMeta.from_dict(torch.load(trained / "best.ckpt", weights_only=True)["transferkit"])
    assert meta.task == "yolo_v4_tiny" and meta.classes == ("0", "1", "2")
    assert meta.arch["mid_anchor_shape"] == anchors["mid_anchor_shape"] and meta.backbone == "cspdarknet_tiny"


def test_evaluate_inference_and_predictions_on_disk_agree(trained, kitti, tmp_path):
    ev = tmp_path / "eval"
    assert tkit("yolo_v4_tiny", "evaluate", "-r", ev, "-m", trained / "best.ckpt", *data_args(kitti), *FAST) == 0
    metrics = json.loads((ev / "metrics.json").read_text())
    assert set(metrics["AP_per_class"]) == {"0", "1", "2"} and metrics["num_images"] == 4 and sum(metrics["num_pred"].values()) > 0
    inf = tmp_path / "inf"
    assert tkit("yolo_v4_tiny", "inference", "-r", inf, "-m", trained / "best.ckpt", *data_args(kitti), *FAST,
                f"inference.images={kitti / 'val/images'}", "inference.score_threshold=0.0") == 0
    records = json.loads((inf / "detections.json").read_text())
    assert len(records) == 4 and len(list((inf / "annotated").iterdir())) == 4
    assert all(len(line.split()) == 16 for f in (inf / "labels").glob("*.txt") for line in f.read_text().splitlines())
    disk = tmp_path / "disk"
    assert tkit("yolo_v4_tiny", "evaluate", "-r", disk, *data_args(kitti), *FAST,
                f"evaluation.predictions={inf / 'labels'}") == 0
    # KITTI files keep 2 decimals of each corner and 4 of each score: the same mAP up to that rounding.
    assert json.loads((disk / "metrics.json").read_text())["mAP"] == pytest.approx(metrics["mAP"], abs=0.02)


@pytest.mark.export
def test_prune_retrain_export_with_nms_in_the_graph(trained, kitti, tmp_path):
    prune = tmp_path / "prune"
    assert tkit("yolo_v4_tiny", "prune", "-r", prune, "-m", trained / "best.ckpt", *data_args(kitti), *FAST,
                "prune.ratio=0.5") == 0
    report = json.loads((prune / "prune_report.json").read_text())
    assert report["params_after"] < report["params_before"] / 2
    retrain = tmp_path / "retrain"
    assert tkit("yolo_v4_tiny", "train", "-r", retrain, *data_args(kitti), *FAST,
                f"model.pruned={prune / 'pruned.ckpt'}") == 0

    export = tmp_path / "export"
    assert tkit("yolo_v4_tiny", "export", "-r", export, "-m", retrain / "best.ckpt", *data_args(kitti), *FAST,
                "export.int8=true", "export.calibration_images=8") == 0
    exported = json.loads((export / "export_report.json").read_text())
    parity = exported["parity"]
    assert parity["ok"] and parity["compared"].startswith("decoded boxes and scores") and parity["detections"] > 0
    assert parity["box_diff"] <= 1e-3 and parity["score_diff"] <= 1e-3
    # The runtimes score the same val images: FP32 ONNX gives PyTorch's detections, so its mAP, except where
    # NMS breaks a near-tie of two overlapping boxes the other way (kernels differ per CPU).
    runtimes = exported["runtimes"]
    assert runtimes["onnx_fp32"]["mAP"] == pytest.approx(runtimes["pytorch"]["mAP"], abs=0.05)
    assert 0 <= runtimes["onnx_int8"]["mAP"] <= 1

    # The graph needs nothing but ONNX Runtime: one output, rows of (batch, x1, y1, x2, y2, score, class).
    import onnxruntime as ort

    session = ort.InferenceSession(str(export / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["detections"]
    assert "NonMaxSuppression" in {n.op_type for n in __import__("onnx").load(str(export / "model.onnx")).graph.node}
    rows = session.run(None, {"input": np.random.default_rng(0).random((3, 3, 64, 64), np.float32)})[0]
    assert rows.shape[1] == 7 and set(np.unique(rows[:, 0])) <= {0.0, 1.0, 2.0}
    assert (rows[:, 3] >= rows[:, 1]).all() and (rows[:, 5] > 0.001).all()

    raw = tmp_path / "raw"
    assert tkit("yolo_v4_tiny", "export", "-r", raw, "-m", retrain / "best.ckpt", *data_args(kitti), *FAST,
                "export.include_nms=false") == 0
    assert json.loads((raw / "export_report.json").read_text())["parity"]["max_abs_diff"] < 1e-3
    ev = tmp_path / "eval_raw"
    assert tkit("yolo_v4_tiny", "evaluate", "-r", ev, "-m", raw / "model.onnx", *data_args(kitti), *FAST) == 0
    assert json.loads((ev / "metrics.json").read_text())["mAP"] == pytest.approx(runtimes["pytorch"]["mAP"], abs=0.05)


@pytest.mark.parametrize("fmt", ["coco", "yolo"])
def test_coco_and_yolo_labels_train_directly(kitti, tmp_path, fmt):
    out = tmp_path / fmt
    assert tkit("detectnet_v2", "dataset_convert", *data_args(kitti), f"dataset_convert.output_format={fmt}",
                f"dataset_convert.output_dir={out}") == 0
    images = out / "train" / "images"
    labels = out / "train.json" if fmt == "coco" else out / "train" / "labels"
    args = [f"data.train_images={images}", f"data.train_labels={labels}", f"data.val_images={images}",
            f"data.val_labels={labels}", f"data.format={fmt}"] + ([f"data.yolo_names={out / 'names.txt'}"] if fmt == "yolo" else [])
    assert tkit("yolo_v4_tiny", "train", "-r", tmp_path / "r", *args, *FAST) == 0
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["classes"] == ["0", "1", "2"]


def test_input_size_not_multiple_of_32_and_bad_anchors_are_clear_errors(kitti, tmp_path, capsys):
    assert tkit("yolo_v4_tiny", "train", "-r", tmp_path / "a", *data_args(kitti), *FAST, "data.image_width=80") == 2
    assert "multiple of 32" in capsys.readouterr().err
    assert tkit("yolo_v4_tiny", "train", "-r", tmp_path / "b", *data_args(kitti), *FAST,
                "model.big_anchor_shape=[[10,10]]") == 2
    assert "big_anchor_shape" in capsys.readouterr().err
