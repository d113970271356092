"""Segmentation through the CLI on a tiny shapes set: train, evaluate (ckpt, .onnx, mask PNGs), inference, prune,
retrain, export with argmax parity."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferkit.cli import main
from transferkit.data.demo import build_demo
from transferkit.engine.meta import ModelMeta

FAST = ["data.image_width=64", "data.image_height=64", "train.batch_size=4", "train.num_workers=0",
        "train.epochs=2", "train.histograms=false", "model.pretrained=false", "evaluation.batch_size=4",
        "data.classes=[background,circle,square,triangle]", "model.decoder_channels=[32,16,16,16,16]"]


def tkit(*args) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    build_demo("shapes_seg", root, seed=0, num_train=8, num_val=4, size=64)
    return root


def data_args(root: Path) -> list[str]:
    return [f"data.train_images={root / 'train/images'}", f"data.train_masks={root / 'train/masks'}",
            f"data.val_images={root / 'val/images'}", f"data.val_masks={root / 'val/masks'}"]


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("seg") / "train"
    assert tkit("segmentation", "train", "-r", run, *data_args(shapes), *FAST) == 0
    return run


def test_train_logs_miou_and_writes_typed_metadata(trained):
    lines = [json.loads(x) for x in (trained / "status.json").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1]
    assert all({"val/mIoU", "val/pixel_accuracy", "train/loss", "val/loss"} <= set(r) for r in lines)
    meta = ModelMeta.from_dict(torch.load(trained / "best.ckpt", weights_only=True)["transferkit"])
    assert meta.task == "segmentation" and meta.classes == ("background", "circle", "square", "triangle")
    assert (meta.image.width, meta.image.height) == (64, 64)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained / "tensorboard")).Reload()
    assert "val/image_truth_prediction" in events.Tags()["images"]


def test_evaluate_and_inference_write_the_contract_files(trained, shapes, tmp_path):
    assert tkit("segmentation", "evaluate", "-r", tmp_path / "eval", "-m", trained / "best.ckpt", *data_args(shapes),
                *FAST) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {"mIoU", "IoU_per_class", "pixel_accuracy"} <= set(metrics)
    assert set(metrics["IoU_per_class"]) == {"background", "circle", "square", "triangle"}
    assert metrics["num_images"] == 4 and (tmp_path / "eval" / "confusion_matrix.png").stat().st_size > 1000

    assert tkit("segmentation", "inference", "-r", tmp_path / "infer", "-m", trained / "best.ckpt", *FAST,
                f"inference.images={shapes / 'val/images'}", "inference.overlay=true") == 0
    images = sorted((shapes / "val/images").iterdir())
    for image in images:
        mask = Image.open(tmp_path / "infer" / "masks" / f"{image.stem}.png")
        assert mask.mode == "P" and mask.size == Image.open(image).size
        assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 1, 2, 3}
        assert (tmp_path / "infer" / "overlays" / f"{image.stem}.png").is_file()

    # The written masks scored as predictions give the model's own figures.
    assert tkit("segmentation", "evaluate", "-r", tmp_path / "disk", *data_args(shapes), *FAST,
                f"evaluation.predictions={tmp_path / 'infer' / 'masks'}") == 0
    on_disk = json.loads((tmp_path / "disk" / "metrics.json").read_text())
    assert on_disk["mIoU"] == pytest.approx(metrics["mIoU"], abs=0.02)


@pytest.mark.export
def test_prune_retrain_export_and_evaluate_the_onnx(trained, shapes, tmp_path):
    assert tkit("segmentation", "prune", "-r", tmp_path / "prune", "-m", trained / "best.ckpt", *data_args(shapes),
                *FAST, "prune.threshold=null", "prune.ratio=0.5") == 0
    report = json.loads((tmp_path / "prune" / "prune_report.json").read_text())
    assert report["params_after"] < report["params_before"]
    assert tkit("segmentation", "train", "-r", tmp_path / "retrain", *data_args(shapes), *FAST, "train.epochs=1",
                f"model.pruned={tmp_path / 'prune' / 'pruned.ckpt'}") == 0
    assert tkit("segmentation", "export", "-r", tmp_path / "export", "-m", tmp_path / "retrain" / "best.ckpt",
                *data_args(shapes), *FAST, "export.int8=true") == 0
    export = json.loads((tmp_path / "export" / "export_report.json").read_text())
    assert export["parity"]["ok"] and export["parity"]["argmax_agreement"] >= 0.999
    assert set(export["runtimes"]) == {"pytorch", "onnx_fp32", "onnx_int8"}
    assert tkit("segmentation", "evaluate", "-r", tmp_path / "eval_onnx", "-m", tmp_path / "export" / "model.onnx",
                *data_args(shapes), *FAST) == 0
    onnx = json.loads((tmp_path / "eval_onnx" / "metrics.json").read_text())
    assert onnx["model"]["runtime"] == "onnx"
    assert onnx["mIoU"] == pytest.approx(export["runtimes"]["pytorch"]["mIoU"], abs=0.01)


def test_a_users_whole_segmentation_onnx_is_fine_tuned_with_a_new_last_layer(shapes, tmp_path):
    """BYOM: export a tiny segmenter to ONNX as 'someone else's model', import it whole (--head auto), fine-tune it
    on 4 classes through the CLI, and evaluate."""
    from transferkit.engine.meta import image_input
    from transferkit.optimize import export_onnx
    from transferkit.tasks.segmentation.model import build_segmenter

    theirs, _ = build_segmenter("vanilla_unet", 2, False, [16, 16, 16, 16, 16])
    onnx_file = export_onnx(theirs.eval(), tmp_path / "theirs.onnx", image_input(64, 64, (0.5,) * 3, (0.5,) * 3),
                            output_names=("logits",))
    assert main(["model", "import-onnx", "theirseg", str(onnx_file), "--head", "auto"]) == 0
    run = tmp_path / "byom"
    assert tkit("segmentation", "train", "-r", run, *data_args(shapes), *FAST, "model.backbone=theirseg",
                "model.pretrained=true", "train.epochs=1") == 0
    report = json.loads((run / "load_report.json").read_text())
    assert report["counts"]["loaded"] > 0
    assert tkit("segmentation", "evaluate", "-r", tmp_path / "byom_eval", "-m", run / "best.ckpt",
                *data_args(shapes), *FAST, "model.backbone=theirseg") == 0
    assert "mIoU" in json.loads((tmp_path / "byom_eval" / "metrics.json").read_text())


def test_dataset_convert_to_coco_then_the_coco_data_scores_the_same(trained, shapes, tmp_path):
    """masks -> COCO JSON with the CLI verb; evaluating on the COCO form of the val set gives the same mIoU."""
    assert tkit("segmentation", "dataset_convert", "-r", tmp_path / "conv", *data_args(shapes), *FAST,
                "dataset_convert.output_format=coco") == 0
    val_json = tmp_path / "conv" / "converted" / "val" / "annotations.json"
    assert json.loads(val_json.read_text())["annotations"]
    assert tkit("segmentation", "evaluate", "-r", tmp_path / "masks_eval", "-m", trained / "best.ckpt",
                *data_args(shapes), *FAST) == 0
    coco = [f"data.val_images={shapes / 'val/images'}", f"data.val_masks={val_json}", "data.format=coco"]
    assert tkit("segmentation", "evaluate", "-r", tmp_path / "coco_eval", "-m", trained / "best.ckpt", *FAST,
                *coco) == 0
    by_masks = json.loads((tmp_path / "masks_eval" / "metrics.json").read_text())
    by_coco = json.loads((tmp_path / "coco_eval" / "metrics.json").read_text())
    assert by_coco["num_images"] == by_masks["num_images"] == 4
    assert by_coco["mIoU"] == pytest.approx(by_masks["mIoU"], abs=1e-9)
