"""DetectNet_v2 through the real CLI on a tiny KITTI set: convert, train, evaluate (model and
predictions on disk), inference, prune, retrain, export with ONNX parity."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from transferkit.engine.meta import ModelMeta

from cli_helpers import detection_data_args as data_args, run_cli as tkit

FAST = ["data.image_width=64", "data.image_height=64", "train.batch_size=4", "train.num_workers=0",
        "train.epochs=1", "train.histograms=false", "model.pretrained=false", "evaluation.batch_size=8"]


@pytest.fixture(scope="module")
def trained(kitti, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("dn") / "train"
    assert tkit("detectnet_v2", "train", "-r", run, *data_args(kitti), *FAST, "train.epochs=2") == 0
    return run


def test_train_writes_status_with_val_map_and_a_loadable_checkpoint(trained):
    lines = [json.loads(x) for x in (trained / "status.json").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1]
    assert all("val/mAP" in r and "train/loss" in r and "val/bbox_loss" in r for r in lines)
    meta = ModelMeta.from_dict(torch.load(trained / "best.ckpt", weights_only=True)["transferkit"])
    assert meta.task == "detectnet_v2" and meta.classes == ("0", "1", "2")
    assert (meta.image.width, meta.image.height) == (64, 64)


def test_evaluate_inference_and_predictions_on_disk_agree(trained, kitti, tmp_path):
    ev = tmp_path / "eval"
    assert tkit("detectnet_v2", "evaluate", "-r", ev, "-m", trained / "best.ckpt", *data_args(kitti), *FAST,
                "postprocess.coverage_threshold=0.0", "postprocess.dbscan_confidence_threshold=0.0") == 0
    metrics = json.loads((ev / "metrics.json").read_text())
    assert set(metrics["AP_per_class"]) == {"0", "1", "2"} and 0 <= metrics["mAP"] <= 1
    assert metrics["mode"] == "integrate" and metrics["num_images"] == 4
    assert list(ev.glob("pr_*.png"))

    inf = tmp_path / "inf"
    assert tkit("detectnet_v2", "inference", "-r", inf, "-m", trained / "best.ckpt", *data_args(kitti), *FAST,
                f"inference.images={kitti / 'val/images'}", "inference.score_threshold=0.0",
                "postprocess.coverage_threshold=0.0", "postprocess.dbscan_confidence_threshold=0.0") == 0
    records = json.loads((inf / "detections.json").read_text())
    assert len(records) == 4 and len(list((inf / "annotated").iterdir())) == 4
    label_files = sorted((inf / "labels").glob("*.txt"))
    assert len(label_files) == 4
    for line in label_files[0].read_text().splitlines():
        assert len(line.split()) == 16  # KITTI + score

    # Scoring the written prediction files must give the same mAP as scoring the model directly.
    disk = tmp_path / "disk"
    assert tkit("detectnet_v2", "evaluate", "-r", disk, *data_args(kitti), *FAST,
                f"evaluation.predictions={inf / 'labels'}") == 0
    on_disk = json.loads((disk / "metrics.json").read_text())
    assert on_disk["mAP"] == pytest.approx(metrics["mAP"], abs=0.02)


@pytest.mark.export
def test_prune_retrain_export_with_onnx_parity(trained, kitti, tmp_path):
    prune = tmp_path / "prune"
    assert tkit("detectnet_v2", "prune", "-r", prune, "-m", trained / "best.ckpt", *data_args(kitti), *FAST,
                "prune.ratio=0.5") == 0
    report = json.loads((prune / "prune_report.json").read_text())
    assert report["params_after"] < report["params_before"]
    retrain = tmp_path / "retrain"
    assert tkit("detectnet_v2", "train", "-r", retrain, *data_args(kitti), *FAST,
                f"model.pruned={prune / 'pruned.ckpt'}") == 0
    export = tmp_path / "export"
    assert tkit("detectnet_v2", "export", "-r", export, "-m", retrain / "best.ckpt", *data_args(kitti), *FAST) == 0
    exported = json.loads((export / "export_report.json").read_text())
    assert exported["parity"]["ok"]
    ev = tmp_path / "eval_onnx"
    assert tkit("detectnet_v2", "evaluate", "-r", ev, "-m", export / "model.onnx", *data_args(kitti), *FAST) == 0
    assert json.loads((ev / "metrics.json").read_text())["model"]["runtime"] == "onnx"


def test_dataset_convert_to_coco_then_train_on_it(kitti, tmp_path):
    out = tmp_path / "coco"
    assert tkit("detectnet_v2", "dataset_convert", *data_args(kitti), "dataset_convert.output_format=coco",
                f"dataset_convert.output_dir={out}", "dataset_convert.val_split=25") == 0
    train_json = next(out.glob("train*.json"), None) or next(out.rglob("*.json"))
    assert train_json.is_file()


def test_case_mismatched_class_names_still_train(kitti, tmp_path, caplog):
    """Labels say 'Zero', the spec says 'zero': TAO would silently score 0 mAP; we match and say so."""
    labels = tmp_path / "labels"
    for split in ("train", "val"):
        (labels / split).mkdir(parents=True)
        for f in (kitti / split / "labels").iterdir():
            rows = [("Zero" + line[1:]) if line.startswith("0 ") else line for line in f.read_text().splitlines()]
            (labels / split / f.name).write_text("\n".join(rows) + "\n")
    args = [f"data.train_images={kitti / 'train/images'}", f"data.train_labels={labels / 'train'}",
            f"data.val_images={kitti / 'val/images'}", f"data.val_labels={labels / 'val'}"]
    run = tmp_path / "case"
    assert tkit("detectnet_v2", "train", "-r", run, *args, *FAST, "data.classes=[zero,'1','2']") == 0
    assert json.loads((run / "metrics.json").read_text())["classes"] == ["zero", "1", "2"]
    assert "case_insensitive_match" in (run / "log.txt").read_text()
    assert "map to no trained class" not in (run / "log.txt").read_text()


def test_input_size_not_multiple_of_16_is_a_clear_error(kitti, tmp_path, capsys):
    code = tkit("detectnet_v2", "train", "-r", tmp_path / "r", *data_args(kitti), *FAST, "data.image_width=70")
    err = capsys.readouterr().err
    assert code == 2 and "data.image_width" in err


def test_per_class_target_and_clustering_overrides(kitti, tmp_path, capsys):
    from transferkit.spec import load_spec
    from transferkit.tasks.detection.detectnet_v2.module import configs
    from transferkit.tasks.detection.detectnet_v2.spec import DetectNetSpec

    spec = load_spec(DetectNetSpec, None, ["targets.per_class={'1': {cov_radius_x: 0.5}}",
                                           "postprocess.per_class={'2': {coverage_threshold: 0.2}}"])
    targets, _, clusters = configs(spec, ["0", "1", "2"])
    assert [t.cov_radius_x for t in targets] == [1.0, 0.5, 1.0]
    assert [c.coverage_threshold for c in clusters] == [0.005, 0.005, 0.2]
    code = tkit("detectnet_v2", "train", "-r", tmp_path / "r", *data_args(kitti), *FAST,
                "targets.per_class={'7': {cov_radius_x: 0.5}}")
    assert code == 2 and "targets.per_class" in capsys.readouterr().err
