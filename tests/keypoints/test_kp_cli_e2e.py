"""The keypoints task through the real CLI on a tiny COCO keypoints set: train, evaluate (checkpoint, .onnx,
predictions file), inference with ground-truth boxes, export (decoded keypoints, INT8) with parity, prune, retrain."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from transferkit.engine.meta import ModelMeta

from kp_task_helpers import FAST, NAMES, data_args, tkit

pytestmark = pytest.mark.slow


@pytest.fixture
def trained(kp_trained) -> Path:
    return kp_trained


def test_train_logs_val_ap_and_stores_the_keypoint_table(trained):
    lines = [json.loads(x) for x in (trained / "status.json").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1]
    assert all({"val/AP", "val/AP50", "val/AR", "train/loss", "val/loss"} <= set(r) for r in lines)
    meta = ModelMeta.from_dict(torch.load(trained / "best.ckpt", weights_only=True)["transferkit"])
    assert meta.task == "keypoints" and list(meta.classes) == NAMES
    assert meta.arch["flip_pairs"] == [[1, 2], [3, 4]] and meta.arch["heatmap_stride"] == 4
    assert meta.arch["skeleton"] == [[0, 1], [0, 2], [0, 3], [0, 4]]
    assert (meta.image.width, meta.image.height) == (64, 64)
    summary = json.loads((trained / "metrics.json").read_text())
    assert (summary["train_images"], summary["train_objects"]) == (8, 12)  # images, and the figures in them
    assert (summary["val_images"], summary["val_objects"]) == (4, 6)


def test_evaluate_inference_and_the_results_file_agree(trained, kpset, tmp_path):
    ev = tmp_path / "eval"
    assert tkit("keypoints", "evaluate", "-r", ev, "-m", trained / "best.ckpt", *data_args(kpset), *FAST) == 0
    metrics = json.loads((ev / "metrics.json").read_text())
    assert {"AP", "AP50", "AP75", "AR", "PCK", "NME"} <= set(metrics)
    assert set(metrics["keypoint_error_px"]) == set(NAMES) and set(metrics["PCK_per_keypoint"]) == set(NAMES)
    assert metrics["num_objects"] == 6 and 0 <= metrics["AP"] <= 1
    assert metrics["sigmas"] == {n: 0.05 for n in NAMES}  # not COCO's joints: the uniform default

    inf = tmp_path / "infer"
    assert tkit("keypoints", "inference", "-r", inf, "-m", trained / "best.ckpt", *FAST,
                f"inference.images={kpset / 'val'}", f"inference.labels={kpset / 'val.json'}") == 0
    results = json.loads((inf / "keypoints.json").read_text())
    assert len(results) == 6 and {r["image_id"] for r in results} == {1, 2, 3, 4}
    assert all(len(r["keypoints"]) == 15 and r["category_id"] == 1 and "score" in r for r in results)
    assert sorted(p.name for p in (inf / "annotated").iterdir()) == ["0001.png", "0002.png", "0003.png", "0004.png"]

    # Ground-truth boxes in inference crop exactly as evaluate does: scoring its file gives the same AP.
    disk = tmp_path / "disk"
    assert tkit("keypoints", "evaluate", "-r", disk, *data_args(kpset), *FAST,
                f"evaluation.predictions={inf / 'keypoints.json'}") == 0
    on_disk = json.loads((disk / "metrics.json").read_text())
    assert on_disk["AP"] == pytest.approx(metrics["AP"], abs=1e-9)
    assert on_disk["model"] == {"predictions": str(inf / "keypoints.json")}


@pytest.mark.export
def test_export_decoded_keypoints_with_int8_then_evaluate_and_infer_from_onnx(trained, kpset, tmp_path):
    ex = tmp_path / "export"
    assert tkit("keypoints", "export", "-r", ex, "-m", trained / "best.ckpt", *data_args(kpset), *FAST,
                "export.output=keypoints", "export.int8=true", "export.calibration_images=8") == 0
    report = json.loads((ex / "export_report.json").read_text())
    assert report["parity"]["keypoint_agreement"] >= 0.99
    assert set(report["runtimes"]) == {"pytorch", "onnx_fp32", "onnx_int8"}
    assert report["runtimes"]["onnx_fp32"]["AP"] == pytest.approx(report["runtimes"]["pytorch"]["AP"], abs=0.02)
    # the head's transposed convolutions stay in float (slower in INT8 on ONNX Runtime's CPU kernels)
    assert sum("ConvTranspose" in name for name in report["int8_float_nodes"]) == 3

    ev = tmp_path / "eval"
    assert tkit("keypoints", "evaluate", "-r", ev, "-m", ex / "model.onnx", *data_args(kpset), *FAST,
                "evaluation.flip_test=true", "evaluation.decode=quarter") == 0
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["flip_test"] is True and metrics["model"]["runtime"] == "onnx" and set(metrics["keypoint_error_px"]) == set(NAMES)
    assert tkit("keypoints", "inference", "-r", tmp_path / "inf", "-m", ex / "model_int8.onnx", *FAST,
                f"inference.images={kpset / 'val'}", "inference.annotate=false") == 0
    results = json.loads((tmp_path / "inf" / "keypoints.json").read_text())
    assert len(results) == 4  # no boxes given: each whole image is one object


@pytest.mark.export
def test_an_unknown_int8_exclusion_is_one_line_naming_the_key(trained, kpset, tmp_path, capsys):
    code = tkit("keypoints", "export", "-r", tmp_path / "ex", "-m", trained / "best.ckpt", *data_args(kpset), *FAST,
                "export.int8=true", "export.calibration_images=4", "export.int8_exclude=[ConvTransposed]")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "export.int8_exclude" in err and "ConvTransposed" in err


@pytest.mark.export
def test_heatmap_export_prune_and_retrain(trained, kpset, tmp_path):
    assert tkit("keypoints", "export", "-r", tmp_path / "ex", "-m", trained / "best.ckpt", *data_args(kpset),
                *FAST, "export.int8=true", "export.calibration_images=4", "export.int8_auto_exclude=true") == 0
    report = json.loads((tmp_path / "ex" / "export_report.json").read_text())
    assert report["parity"]["ok"] and report["parity"]["max_abs_diff"] <= 1e-3
    auto = report["int8_auto"]  # what it keeps depends on this CPU's timings: only its consistency is checked
    assert set(auto["kept_in_float"]) <= set(auto["slower_in_int8"]) and auto["tries"][0]["float"] == []
    assert sum("ConvTranspose" in name for name in report["int8_float_nodes"]) == 3  # the task's own choice

    pr = tmp_path / "prune"
    assert tkit("keypoints", "prune", "-r", pr, "-m", trained / "best.ckpt", *data_args(kpset), *FAST,
                "prune.ratio=0.5", "prune.min_num_filters=8") == 0
    report = json.loads((pr / "prune_report.json").read_text())
    assert report["params_after"] < report["params_before"]
    assert not any(r["name"] == "final" and r["kept"] != r["total"] for r in report["layers"])
    retrain = tmp_path / "retrain"
    assert tkit("keypoints", "train", "-r", retrain, *data_args(kpset), *FAST, "train.epochs=1",
                f"model.pruned={pr / 'pruned.ckpt'}") == 0
    assert json.loads((retrain / "metrics.json").read_text())["epochs_completed"] == 1


def test_boxes_from_a_coco_detections_file(trained, kpset, tmp_path):
    coco = json.loads((kpset / "val.json").read_text())
    detections = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.9}
                  for a in coco["annotations"]]
    detections.append({"image_id": 999, "category_id": 1, "bbox": [1, 1, 10, 10], "score": 0.9})  # no such image
    detections.append({"image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "score": 0.1})  # below threshold
    boxes = tmp_path / "dets.json"
    boxes.write_text(json.dumps(detections))
    out = tmp_path / "inf"
    assert tkit("keypoints", "inference", "-r", out, "-m", trained / "best.ckpt", *FAST,
                f"inference.images={kpset / 'val'}", f"inference.labels={kpset / 'val.json'}",
                f"inference.boxes={boxes}", "inference.annotate=false") == 0
    results = json.loads((out / "keypoints.json").read_text())
    assert sorted(r["image_id"] for r in results) == sorted(a["image_id"] for a in coco["annotations"])
    assert all(r["score"] <= 0.9 for r in results)  # the box's score scales the object's
    assert "1 detections matched no image" in json.loads((out / "inference.json").read_text())["boxes_from"]


@pytest.mark.export
def test_resize_head_trains_prunes_and_exports_int8_with_nothing_left_in_float(kpset, tmp_path):
    run = tmp_path / "train"
    assert tkit("keypoints", "train", "-r", run, *data_args(kpset), *FAST, "train.epochs=1", "model.upsample=resize") == 0
    meta = ModelMeta.from_dict(torch.load(run / "best.ckpt", weights_only=True)["transferkit"])
    assert meta.arch["upsample"] == "resize" and meta.arch["heatmap_stride"] == 4

    pr = tmp_path / "prune"
    assert tkit("keypoints", "prune", "-r", pr, "-m", run / "best.ckpt", *data_args(kpset), *FAST,
                "prune.ratio=0.5", "prune.min_num_filters=8") == 0
    assert tkit("keypoints", "train", "-r", tmp_path / "retrain", *data_args(kpset), *FAST, "train.epochs=1",
                f"model.pruned={pr / 'pruned.ckpt'}") == 0
    ex = tmp_path / "export"
    assert tkit("keypoints", "export", "-r", ex, "-m", tmp_path / "retrain" / "best.ckpt", *data_args(kpset), *FAST,
                "export.int8=true", "export.calibration_images=4") == 0
    report = json.loads((ex / "export_report.json").read_text())
    assert report["parity"]["ok"]
    # no ConvTranspose: the whole head quantises (only the backbone's stem conv stays in float, as for every task)
    assert [n for n in report["int8_float_nodes"] if not n.startswith("/backbone/stages.0/")] == []

    import onnx
    ops = {node.op_type for node in onnx.load(str(ex / "model.onnx")).graph.node}
    assert "Resize" in ops and "ConvTranspose" not in ops


def test_a_model_file_without_the_upsample_key_builds_the_deconv_head(trained):
    from transferkit.tasks import get_task

    ckpt = torch.load(trained / "best.ckpt", weights_only=True)
    meta = ModelMeta.from_dict(ckpt["transferkit"])
    old = meta.with_updates(arch={k: v for k, v in meta.arch.items() if k != "upsample"})
    net = get_task("keypoints").build_net(old)
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules()) == 3
    net.load_state_dict({k.removeprefix("net."): v for k, v in ckpt["state_dict"].items()})
