"""Keypoints: ImageNet MobileNetV2 + deconvolution head vs the same network from scratch on the same wall-time
budget, then the ImageNet model in eager PyTorch vs ONNX Runtime FP32 vs INT8 (heatmap outputs, decoded outside).

    python benchmarks/keypoints.py --quick   # ~3 min: 40 train / 15 val images (~80 / ~30 objects), 30 s per model
    python benchmarks/keypoints.py           # full: 180 train / 50 val images (>= 300 training objects), 240 s per model
    python benchmarks/keypoints.py --seconds 120   # the same set, 120 s per model
    python benchmarks/keypoints.py --upsample resize --no-scratch   # the resize + conv head (keypoints_resize.json)

Data: the offline `figures` demo (stick figures with 14 named joints on scikit-image textures, 1-3 per 160 px image,
occluders give v=1, figures leaving the frame v=0). Crops are 96 x 128 (w x h), heatmaps at stride 4, AdamW 1e-3,
the backbone at 0.5x. Each model: a 1-epoch probe gives the epoch time, the real run gets the epochs that fit the
budget (train.max_minutes as a safety net). Reported: OKS AP / AP50 / PCK@0.05 on the val objects (evaluate verb,
ground-truth boxes, uniform sigma 0.05 as the figures are not COCO's joints), training objects/s (objects x epochs /
fit wall time, validation included), and for the ImageNet model: latency per crop batch of 1 and 16 and AP of each
runtime. Run by hand; tests never run it. Results: benchmarks/results/keypoints[_quick].json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from common import busy_note, cpu_snapshot, others_cpu_share, time_calls, train_for_budget, write_results  # noqa: E402,E501

import torch  # noqa: E402

from transferkit import api  # noqa: E402
from transferkit.data.demo import build_demo  # noqa: E402
from transferkit.tasks import get_task  # noqa: E402

MODES = {
    "quick": {"train": 40, "val": 15, "budget_s": 30, "runs": 10},
    "full": {"train": 180, "val": 50, "budget_s": 240, "runs": 30},
}
WIDTH, HEIGHT = 96, 128
COMMON = [f"data.image_width={WIDTH}", f"data.image_height={HEIGHT}", "train.num_workers=2", "train.histograms=false",
          "train.batch_size=32", "evaluation.batch_size=32", "train.learning_rate=0.001", "train.backbone_lr_scale=0.5",
          "train.warmup_epochs=1", "model.deconv_channels=[128,128,128]", "data.augmentation.half_body=0.2"]
MODELS = [("imagenet", "MobileNetV2 + deconv head, ImageNet backbone", ["model.backbone=mobilenet_v2"]),
          ("scratch", "MobileNetV2 + deconv head, random init", ["model.backbone=mobilenet_v2", "model.pretrained=false"])]


def data_overrides(data: Path) -> list[str]:
    return [f"data.{split}_{kind}={data / split if kind == 'images' else data / f'{split}.json'}"
            for split in ("train", "val") for kind in ("images", "labels")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller set, shorter budget")
    parser.add_argument("--seconds", type=float, help="training budget per model (default: the mode's)")
    parser.add_argument("--upsample", choices=("deconv", "resize"), default="deconv",
                        help="the head's 2x stages (model.upsample); resize writes keypoints_resize[_quick].json")
    parser.add_argument("--no-scratch", action="store_true", help="train only the ImageNet model")
    args = parser.parse_args()
    head = [f"model.upsample={args.upsample}"]
    models = [(key, label.replace("deconv head", f"{args.upsample} head"), extra + head) for key, label, extra in MODELS
              if not (args.no_scratch and key == "scratch")]
    mode_name = "quick" if args.quick else "full"
    mode = dict(MODES[mode_name])
    if args.seconds:
        mode["budget_s"] = args.seconds
    before = cpu_snapshot()
    result: dict = {"mode": mode_name, **mode, "crop": [WIDTH, HEIGHT], "upsample": args.upsample, "models": {},
                    "runtimes": {}}
    with tempfile.TemporaryDirectory(prefix="tkit-bench-kp-") as tmp:
        root = Path(tmp)
        build_demo("figures", root / "data", seed=0, train=mode["train"], val=mode["val"])
        objects = _objects(root / "data")
        result["objects"] = objects
        print(f"figures: {objects['train']} training / {objects['val']} val objects", flush=True)
        overrides = COMMON + data_overrides(root / "data")
        for key, label, extra in models:
            print(f"training {label} for {mode['budget_s']} s", flush=True)
            row = train_for_budget("keypoints", None, key, overrides + extra, root, mode["budget_s"], objects["train"],
                                   "objects", "AP")
            metrics = api.evaluate("keypoints", None, root / f"{key}_eval", overrides + extra,
                                   model=root / key / "best.ckpt")
            row.update(label=label, AP=metrics["AP"], AP50=metrics["AP50"], PCK=metrics["PCK"])
            result["models"][key] = row

        print("exporting the ImageNet model (FP32 + INT8)", flush=True)
        best = root / "imagenet" / "best.ckpt"
        api.export("keypoints", None, root / "export", overrides + models[0][2] + ["export.int8=true"], model=best)
        task = get_task("keypoints")
        for key, path in (("pytorch", best), ("onnx_fp32", root / "export" / "model.onnx"),
                          ("onnx_int8", root / "export" / "model_int8.onnx")):
            metrics = api.evaluate("keypoints", None, root / f"eval_{key}", overrides + models[0][2], model=path)
            predictor = api.load_predictor(task, path)
            latency = {}
            for batch in (1, 16):
                x = torch.randn(batch, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))
                latency[f"batch{batch}_ms"] = round(statistics.median(time_calls(lambda: predictor(x), mode["runs"])), 3)
            result["runtimes"][key] = {"AP": metrics["AP"], "PCK": metrics["PCK"], "file_bytes": path.stat().st_size,
                                       **latency}
    share = others_cpu_share(before, cpu_snapshot())
    result["others_cpu_share"] = share
    name = "keypoints" + ("_resize" if args.upsample == "resize" else "") + ("_quick" if args.quick else "")
    path = write_results(name, result)
    print(f"\nfigures, {objects['train']} train / {objects['val']} val objects, {WIDTH}x{HEIGHT} crops, "
          f"{mode['budget_s']} s of training per model {busy_note(share)}")
    print(f"{'model':<48} {'epochs':>6} {'obj/s':>7} {'AP':>6} {'AP50':>6} {'PCK':>6}")
    for row in result["models"].values():
        print(f"{row['label']:<48} {row['epochs']:>6} {row['train_objects_per_s']:>7.1f} {row['AP'] or 0:>6.3f} "
              f"{row['AP50'] or 0:>6.3f} {row['PCK'] or 0:>6.3f}")
    print(f"\n{'runtime':<10} {'batch 1 ms':>10} {'batch 16 ms':>11} {'MB':>6} {'AP':>6}")
    for key, row in result["runtimes"].items():
        print(f"{key:<10} {row['batch1_ms']:>10.2f} {row['batch16_ms']:>11.2f} {row['file_bytes'] / 1e6:>6.2f} "
              f"{row['AP'] or 0:>6.3f}")
    print(f"results: {path}")


def _objects(data: Path) -> dict[str, int]:
    """Objects per split with at least one labelled keypoint (what training and evaluation use)."""
    counts = {}
    for split in ("train", "val"):
        coco = json.loads((data / f"{split}.json").read_text())
        counts[split] = sum(1 for a in coco["annotations"] if not a.get("iscrowd") and any(a["keypoints"][2::3]))
    return counts


if __name__ == "__main__":
    main()
