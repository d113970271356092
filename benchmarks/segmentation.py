"""Segmentation: ImageNet MobileNetV2 UNet vs the same network from scratch on the same wall-time budget, then the
ImageNet model in eager PyTorch vs ONNX Runtime FP32 vs INT8.

    python benchmarks/segmentation.py --quick   # ~4 min: 100 train / 40 val images, 45 s of training per model
    python benchmarks/segmentation.py           # full: 320 train / 80 val images at 128 px, 120 s per model
    python benchmarks/segmentation.py --byom    # also: PP-OCRv4's text detector (rapidocr-onnxruntime wheel)
                                                # imported whole (import-onnx --head auto), imported vs random weights

Data: the offline `shapes_seg` demo set (coloured circles, squares and triangles on scikit-image textures and
photos, masks with class ids), 128x128; the other settings are examples/segmentation.yaml's (UNet widths
[128, 64, 48, 32, 16], AdamW 0.005, encoder at 0.3x, auto class weights). Each model: a 2-epoch probe gives the epoch time, the real run gets the
epochs that fit the budget (train.max_minutes as a safety net). Reported: val mIoU and pixel accuracy (evaluate
verb, one confusion matrix over the val set), training images/s (train images x epochs / fit wall time, validation
included), and for the ImageNet model: latency at batch 1 and 16 and mIoU of each runtime. Run by hand; tests never
run it. Results: benchmarks/results/segmentation[_quick].json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from common import busy_note, cpu_snapshot, others_cpu_share, time_calls, train_for_budget, write_results  # noqa: E402,E501

import torch  # noqa: E402

from transferkit import api  # noqa: E402
from transferkit.data.demo import build_demo  # noqa: E402
from transferkit.tasks import get_task  # noqa: E402

MODES = {
    "quick": {"num_train": 100, "num_val": 40, "budget_s": 45, "runs": 10},
    "full": {"num_train": 320, "num_val": 80, "budget_s": 120, "runs": 30},
}
SIZE = 128
SPEC = Path(__file__).resolve().parent.parent / "examples" / "segmentation.yaml"  # classes, decoder, optimiser
COMMON = [f"data.image_width={SIZE}", f"data.image_height={SIZE}", "train.num_workers=2", "train.histograms=false",
          "train.batch_size=16", "evaluation.batch_size=16"]
MODELS = [("imagenet", "MobileNetV2 UNet, ImageNet encoder", ["model.backbone=mobilenet_v2"]),
          ("scratch", "MobileNetV2 UNet, random init", ["model.backbone=mobilenet_v2", "model.pretrained=false"])]


def data_overrides(data: Path) -> list[str]:
    return [f"data.{split}_{kind}={data / split / kind}" for split in ("train", "val") for kind in ("images", "masks")]


def byom_models() -> list[tuple[str, str, list[str]]]:
    """PP-OCRv4's DBNet text detector, imported whole with its last layer replaced for our 4 classes."""
    from transferkit.zoo import import_onnx
    from transferkit.zoo.entry import PackagedFile
    from transferkit.zoo.sources import packaged_file

    found = packaged_file(PackagedFile("rapidocr-onnxruntime", "rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx"))
    if found is None:
        raise SystemExit("--byom needs rapidocr-onnxruntime: pip install --no-deps rapidocr-onnxruntime==1.4.4")
    entry, report = import_onnx("ppocr_det_seg", found, head_node="auto", overwrite=True, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    print(f"imported {found.name}: {report}", flush=True)
    return [("ppocr_imported", "PP-OCRv4 detector, imported weights", ["model.backbone=ppocr_det_seg"]),
            ("ppocr_random", "PP-OCRv4 detector, random init", ["model.backbone=ppocr_det_seg", "model.pretrained=false"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller set, shorter budget")
    parser.add_argument("--byom", action="store_true", help="add the imported PP-OCRv4 detector (imported vs random)")
    args = parser.parse_args()
    models = list(MODELS)
    mode_name = "quick" if args.quick else "full"
    mode = MODES[mode_name]
    before = cpu_snapshot()
    result: dict = {"mode": mode_name, **mode, "image_size": SIZE, "models": {}, "runtimes": {}}
    with tempfile.TemporaryDirectory(prefix="tkit-bench-seg-") as tmp:
        root = Path(tmp)
        build_demo("shapes_seg", root / "data", seed=0, num_train=mode["num_train"], num_val=mode["num_val"], size=SIZE)
        overrides = COMMON + data_overrides(root / "data")
        if args.byom:
            os.environ["TRANSFERKIT_HOME"] = str(root / "home")  # the import lands here, not in the user's cache
            models += byom_models()
        for key, label, extra in models:
            print(f"training {label} for {mode['budget_s']} s", flush=True)
            row = train_for_budget("segmentation", SPEC, key, overrides + extra, root, mode["budget_s"],
                                   mode["num_train"], "images", "mIoU", probe_epochs=2)
            metrics = api.evaluate("segmentation", SPEC, root / f"{key}_eval", overrides + extra,
                                   model=root / key / "best.ckpt")
            row.update(label=label, mIoU=metrics["mIoU"], pixel_accuracy=metrics["pixel_accuracy"])
            result["models"][key] = row

        print("exporting the ImageNet model (FP32 + INT8)", flush=True)
        best = root / "imagenet" / "best.ckpt"
        api.export("segmentation", SPEC, root / "export", overrides + MODELS[0][2] + ["export.int8=true"], model=best)
        task = get_task("segmentation")
        for key, path in (("pytorch", best), ("onnx_fp32", root / "export" / "model.onnx"),
                          ("onnx_int8", root / "export" / "model_int8.onnx")):
            metrics = api.evaluate("segmentation", SPEC, root / f"eval_{key}", overrides + MODELS[0][2], model=path)
            predictor = api.load_predictor(task, path)
            latency = {}
            for batch in (1, 16):
                x = torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
                latency[f"batch{batch}_ms"] = round(statistics.median(time_calls(lambda: predictor(x), mode["runs"])), 3)
            result["runtimes"][key] = {"mIoU": metrics["mIoU"], "file_bytes": path.stat().st_size, **latency}
    share = others_cpu_share(before, cpu_snapshot())
    result["others_cpu_share"] = share
    path = write_results(f"segmentation{'_quick' if args.quick else ''}{'_byom' if args.byom else ''}", result)
    print(f"\nshapes_seg at {SIZE} px, {mode['num_train']} train / {mode['num_val']} val images, "
          f"{mode['budget_s']} s of training per model {busy_note(share)}")
    print(f"{'model':<40} {'epochs':>6} {'img/s':>7} {'mIoU':>6} {'pix acc':>8}")
    for row in result["models"].values():
        print(f"{row['label']:<40} {row['epochs']:>6} {row['train_images_per_s']:>7.1f} {row['mIoU'] or 0:>6.3f} "
              f"{row['pixel_accuracy'] or 0:>8.3f}")
    print(f"\n{'runtime':<10} {'batch 1 ms':>10} {'batch 16 ms':>11} {'MB':>6} {'mIoU':>6}")
    for key, row in result["runtimes"].items():
        print(f"{key:<10} {row['batch1_ms']:>10.2f} {row['batch16_ms']:>11.2f} {row['file_bytes'] / 1e6:>6.2f} "
              f"{row['mIoU'] or 0:>6.3f}")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
