"""End to end through the real CLI: train -> evaluate -> inference, artifacts read back."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from transferkit.engine.meta import ModelMeta
from transferkit.cli import main

FAST = ["data.image_size=32", "train.batch_size=8", "train.num_workers=0", "train.epochs=1",
        "train.learning_rate=0.01", "evaluation.batch_size=16"]


def data_args(root: Path) -> list[str]:
    return [f"data.train_dir={root / 'train'}", f"data.val_dir={root / 'val'}"]


def tkit(*args: str) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory) -> Path:
    """One pretrained-MobileNetV2 run of 2 epochs shared by the read-back tests."""
    run = tmp_path_factory.mktemp("run") / "cls"
    assert tkit("classification", "train", "-r", run, *data_args(digits), *FAST, "train.epochs=2") == 0
    return run


def test_default_spec_printed_by_cli_is_accepted_unchanged_by_train(digits, tmp_path, capsys):
    assert tkit("classification", "default_spec") == 0
    spec = tmp_path / "spec.yaml"
    spec.write_text(capsys.readouterr().out)
    run = tmp_path / "run"
    assert tkit("classification", "train", "-e", spec, "-r", run, *data_args(digits), *FAST,
                "model.pretrained=false", "train.histograms=false") == 0
    written = yaml.safe_load((run / "spec.yaml").read_text())
    assert written["train"]["epochs"] == 1 and written["data"]["image_size"] == 32


def test_train_writes_every_artifact(trained):
    for name in ("log.txt", "spec.yaml", "status.json", "metrics.json", "load_report.json", "best.ckpt", "last.ckpt"):
        assert (trained / name).is_file(), name
    lines = [json.loads(line) for line in (trained / "status.json").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1]
    for record in lines:
        for key in ("step", "train/loss", "val/loss", "val/acc", "lr", "epoch_time_s"):
            assert key in record, key
    assert lines[1]["step"] == 2 * lines[0]["step"] > 0
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 2
    assert 0.0 <= metrics["best"]["val/acc"] <= 1.0
    assert metrics["val_images"] == 20 and metrics["train_images"] == 40
    assert metrics["skipped_images"]["count"] == 0
    assert metrics["ranks_that_trained"] == [0]
    assert "epoch 2/2" in (trained / "log.txt").read_text()


def test_load_report_counts_imagenet_tensors_and_new_head(trained):
    report = json.loads((trained / "load_report.json").read_text())
    assert report["source"].startswith("package")
    assert report["counts"]["loaded"] == 312  # every MobileNetV2 feature tensor
    assert set(report["reinitialised"]) == {"fc.weight", "fc.bias"}
    assert "[1000, 1280]" in report["reinitialised"]["fc.weight"]


def test_tensorboard_events_hold_scalars_images_and_histograms(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained / "tensorboard"), size_guidance={"images": 0, "histograms": 0}).Reload()
    tags = events.Tags()
    for tag in ("train/loss_step", "train/loss_epoch", "val/loss", "val/acc", "val/top5", "train/lr"):
        assert tag in tags["scalars"], (tag, tags["scalars"])
    assert len(events.Scalars("val/acc")) == 2
    assert "val/predictions" in tags["images"]
    assert any(t.startswith("weights/") for t in tags["histograms"])


def test_checkpoint_loads_with_weights_only_and_carries_metadata(trained):
    ckpt = torch.load(trained / "best.ckpt", map_location="cpu", weights_only=True)
    raw = ckpt["transferkit"]
    assert raw["version"] == 2 and raw["inputs"][0]["shape"] == ["batch", 3, 32, 32]
    meta = ModelMeta.from_dict(raw)
    assert meta.task == "classification" and meta.classes == tuple(str(i) for i in range(10))
    assert meta.backbone == "mobilenet_v2" and (meta.image.height, meta.image.width) == (32, 32)


def test_evaluate_and_inference_from_checkpoint(trained, digits, tmp_path):
    assert tkit("classification", "evaluate", "-r", tmp_path / "eval", "-m", trained / "best.ckpt", *data_args(digits), *FAST) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_images"] == 20
    assert set(metrics["per_class"]) == {str(i) for i in range(10)}
    assert {"top1", "top5", "macro_f1"} <= set(metrics)
    matrix = json.loads((tmp_path / "eval" / "confusion_matrix.json").read_text())["rows_true_cols_predicted"]
    assert sum(map(sum, matrix)) == 20
    assert (tmp_path / "eval" / "confusion_matrix.png").stat().st_size > 1000
    best = json.loads((trained / "metrics.json").read_text())["best"]["val/acc"]
    assert metrics["top1"] == pytest.approx(best, abs=1e-6)  # same val set, same numbers

    out = tmp_path / "infer"
    assert tkit("classification", "inference", "-r", out, "-m", trained / "best.ckpt", *data_args(digits), *FAST,
                f"inference.images={digits / 'val'}", "inference.annotate=true") == 0
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 20
    assert {r["label1"] for r in rows} <= {str(i) for i in range(10)}
    assert all(float(r["score1"]) >= float(r["score2"]) for r in rows)
    # annotated/ mirrors inference.images: val/<class>/<image> -> annotated/<class>/<image stem>.png
    assert len(list((out / "annotated").rglob("*.png"))) == 20
    assert sorted(p.name for p in (out / "annotated").iterdir()) == sorted(p.name for p in (digits / "val").iterdir())
    # The throughput summary: every image went through the model, in batches of inference.batch_size at most.
    speed = json.loads((out / "inference.json").read_text())["throughput"]
    assert speed["items"] == 20 and speed["items_per_s"] > 0
    batch = yaml.safe_load((out / "spec.yaml").read_text())["inference"]["batch_size"]
    assert speed["model_calls"] == -(-20 // batch) and speed["batch_size_max"] == min(batch, 20)
    assert 0 < speed["model_ms_p50"] <= speed["model_ms_p95"] and 0 < speed["model_share"] <= 1
    assert "throughput:" in (out / "log.txt").read_text()


def test_resume_continues_the_step_count_and_may_add_epochs(digits, tmp_path):
    run = tmp_path / "run"
    args = ["-r", run, *data_args(digits), *FAST, "model.pretrained=false", "train.histograms=false"]
    assert tkit("classification", "train", *args) == 0
    first = [json.loads(x) for x in (run / "status.json").read_text().splitlines()]
    assert tkit("classification", "train", *args, "train.epochs=2", "train.resume=true") == 0
    both = [json.loads(x) for x in (run / "status.json").read_text().splitlines()]
    assert [r["epoch"] for r in both] == [0, 1]
    assert both[0] == first[0]
    assert both[1]["step"] == 2 * first[0]["step"]
    assert json.loads((run / "metrics.json").read_text())["global_step"] == both[1]["step"]


def test_adding_classes_keeps_head_rows_of_shared_classes(digits, tmp_path):
    old = tmp_path / "old"
    assert tkit("classification", "train", "-r", old, *data_args(digits), *FAST, "model.pretrained=false",
                "data.classes=[0,1,2,3,4,5,6,7,8,9]") == 0
    # New class list: drops nothing, renames order and adds two unseen classes -> 10 of 12 rows kept.
    new_data = tmp_path / "new"
    for split in ("train", "val"):
        for cls in list((digits / split).iterdir()):
            (new_data / split / cls.name).mkdir(parents=True)
            for f in cls.iterdir():
                (new_data / split / cls.name / f.name).symlink_to(f)
        for extra in ("x", "y"):
            (new_data / split / extra).mkdir()
            for f in list((digits / split / "1").iterdir())[:2]:
                (new_data / split / extra / f.name).symlink_to(f)
    run = tmp_path / "added"
    assert tkit("classification", "train", "-r", run, *data_args(new_data), *FAST,
                f"model.pretrained={old / 'best.ckpt'}") == 0
    report = json.loads((run / "load_report.json").read_text())
    assert report["partially_loaded"]["fc.weight"].startswith("10 of 12 rows")
    old_fc = torch.load(old / "best.ckpt", weights_only=True)["state_dict"]["net.fc.weight"]
    # Before training moved it, row "3" of the new head was row "3" of the old one: check the report's
    # claim through the loader directly.
    from transferkit.tasks.classification.model import build_classifier

    classes = [str(i) for i in range(10)] + ["x", "y"]
    net, _ = build_classifier("mobilenet_v2", list(reversed(classes)), str(old / "best.ckpt"), 0.0)
    assert torch.equal(net.fc.weight[list(reversed(classes)).index("3")], old_fc[3])


def test_unknown_backbone_is_a_clear_cli_error(digits, tmp_path, capsys):
    code = tkit("classification", "train", "-r", tmp_path / "r", *data_args(digits), *FAST, "model.backbone=mobilenet_v9")
    err = capsys.readouterr().err
    assert code == 2 and "mobilenet_v9" in err and "Traceback" not in err


@pytest.mark.slow
def test_ddp_with_two_cpu_processes_only_rank_zero_writes(digits, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    tkit_bin = Path(sys.executable).with_name("tkit")
    proc = subprocess.run(
        [str(tkit_bin), "classification", "train", "-r", str(run), *data_args(digits), *FAST,
         "model.pretrained=false", "train.accelerator=cpu", "train.num_devices=2", "train.histograms=false",
         "train.max_minutes=600"],  # the budget's plan is broadcast from rank zero at each epoch's end
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["planned_epochs"] == 1
    assert metrics["ranks_that_trained"] == [0, 1]
    assert len((run / "status.json").read_text().splitlines()) == 1  # one writer, one line per epoch
    # 40 training images, batch 8 per rank, 2 ranks -> 40 / 16 = 2 full steps (last partial batch dropped)
    assert metrics["global_step"] in (2, 3)
    files = sorted(p.name for p in run.iterdir())
    assert files == sorted([".tkit-run.json", "best.ckpt", "last.ckpt", "log.txt", "metrics.json", "spec.yaml",
                            "status.json", "tensorboard"]), files
