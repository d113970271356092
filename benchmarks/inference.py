"""Eager PyTorch vs ONNX Runtime FP32 vs ONNX Runtime INT8, per task, with the accuracy of each.

    python benchmarks/inference.py --quick          # ~45 s idle: 64 px digits, 60 kitti_digits images, few epochs (a smoke run)
    python benchmarks/inference.py                  # full mode, ~2.5 min on an idle 2-core CPU: 96 px / 10 epochs, 200 images / 12 epochs
    python benchmarks/inference.py --tasks detectnet_v2              # only some rows of TASKS
    python benchmarks/inference.py --out runs/inf                    # keep the models ...
    python benchmarks/inference.py --out runs/inf --reuse            # ... and re-time them later

For every row of TASKS: build the row's demo data set, train a small model (`api.train`), export it
with `export.int8=true` (`api.export`: model.onnx + model_int8.onnx), evaluate each of the three on
the held-out val split (`api.evaluate`: top1 for classification, mAP for detection), then time the
three `api.load_predictor(task, path)` objects at batch 1 and 32 in rounds (each round times every
runtime in turn, warm-up calls first). Prints one table and the speed-ups, and writes
benchmarks/results/inference.json with machine info, the other processes' CPU share, and every raw
timing. Run by hand; the tests never run it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402

from common import busy_note, cpu_snapshot, others_cpu_share, time_calls, write_results  # noqa: E402
from transferkit import api  # noqa: E402
from transferkit.data.demo import build_demo  # noqa: E402
from transferkit.tasks import get_task  # noqa: E402

NAME = "inference"
# One entry per task. `overrides` apply in both modes ("{data}" is the demo folder), then the mode's own list;
# `demo_options` go to build_demo(demo, dir, seed=0, **options), also shared then per mode. The metric is the
# task's headline (top1, mAP) from api.evaluate on the val split.
TASKS = [
    {"task": "classification", "demo": "digits",
     "demo_options": {"shared": {}, "quick": {"size": 64}, "full": {"size": 96}},
     "overrides": {"shared": ["data.train_dir={data}/train", "data.val_dir={data}/val", "data.augmentation.horizontal_flip=0.0",
                              "model.backbone=mobilenet_v2", "model.pretrained=true", "train.batch_size=32",
                              "train.optimizer=sgd", "train.learning_rate=0.02", "train.num_workers=2",
                              "train.histograms=false", "export.calibration_images=64"],
                   "quick": ["data.image_size=64", "train.epochs=3"],
                   "full": ["data.image_size=96", "train.epochs=10"]}},
    {"task": "detectnet_v2", "demo": "kitti_digits",  # the settings of examples/detectnet_v2.yaml
     "demo_options": {"shared": {}, "quick": {"num_train": 60, "num_val": 20}, "full": {"num_train": 200, "num_val": 50}},
     "overrides": {"shared": ["data.format=kitti", "data.train_images={data}/train/images", "data.train_labels={data}/train/labels",
                              "data.val_images={data}/val/images", "data.val_labels={data}/val/labels",
                              "data.image_width=128", "data.image_height=128", "data.augmentation.horizontal_flip=0.0",
                              "model.backbone=mobilenet_v2", "model.pretrained=true", "train.batch_size=8",
                              "train.optimizer=adamw", "train.learning_rate=0.002", "train.num_workers=2",
                              "train.histograms=false", "evaluation.mode=integrate", "evaluation.iou_thresholds=0.5",
                              "export.calibration_images=32"],
                   "quick": ["train.epochs=4"],
                   "full": ["train.epochs=12"]}},
]
RUNTIMES = [("pytorch", "eager PyTorch", "train/best.ckpt"), ("onnx_fp32", "ONNX Runtime FP32", "export/model.onnx"),
            ("onnx_int8", "ONNX Runtime INT8", "export/model_int8.onnx")]
BATCHES = (1, 32)
MODES = {  # timing rounds; per runtime and round: untimed warm-up calls, then timed calls at batch 1 / 32
    "quick": {"rounds": 3, "warmup": 2, "runs_b1": 10, "runs_b32": 2},
    "full": {"rounds": 7, "warmup": 3, "runs_b1": 30, "runs_b32": 6},
}


def overrides_for(row: dict, mode_name: str, data: Path) -> list[str]:
    return [o.replace("{data}", str(data)) for o in row["overrides"]["shared"] + row["overrides"][mode_name]]


def prepare(row: dict, mode_name: str, root: Path, log) -> dict:
    """Demo data, train, export (FP32 + INT8); returns wall times of the steps."""
    task, data = row["task"], root / "data"
    options = {**row["demo_options"]["shared"], **row["demo_options"][mode_name]}
    log(f"{task}: build_demo({row['demo']!r}, seed=0, {options})")
    build_demo(row["demo"], data, seed=0, **options)
    overrides, steps = overrides_for(row, mode_name, data), {}
    t0 = time.perf_counter()
    log(f"{task}: train")
    api.train(task, None, root / "train", overrides, overwrite=True)
    steps["train_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    log(f"{task}: export (FP32 + INT8)")
    api.export(task, None, root / "export", overrides + ["export.int8=true"], model=root / "train" / "best.ckpt")
    steps["export_s"] = round(time.perf_counter() - t0, 1)
    return steps


def measure(row: dict, mode_name: str, mode: dict, root: Path, log) -> dict:
    task, t = row["task"], get_task(row["task"])
    overrides = overrides_for(row, mode_name, root / "data")
    out: dict = {"task": task, "metric": t.headline, "runtimes": {}}
    predictors = {}
    for key, label, rel in RUNTIMES:
        path = root / rel
        log(f"{task}: evaluate {label} ({path.name})")
        metrics = api.evaluate(task, None, root / f"eval_{key}", overrides, model=path)
        predictors[key] = api.load_predictor(t, path)
        out["runtimes"][key] = {"label": label, "file": str(path), "file_bytes": path.stat().st_size,
                                "metric_value": metrics[t.headline], "val_images": metrics.get("num_images"),
                                "raw_latency_ms": {}}
    image = predictors["pytorch"].meta.image
    hw = (image.height, image.width)
    out["input_hw"] = list(hw)
    before, load = cpu_snapshot(), {"loadavg_before": os.getloadavg()}
    for batch in BATCHES:
        runs = mode[f"runs_b{batch}"]
        log(f"{task}: timing batch {batch}, {mode['rounds']} rounds of {mode['warmup']} warm-up + {runs} runs per runtime")
        x = torch.randn(batch, 3, *hw, generator=torch.Generator().manual_seed(0))
        # Whole blocks per runtime, not call by call: ONNX Runtime's and PyTorch's OpenMP threads keep spinning
        # after a call and would slow the next runtime's calls, and a pause before each block lets them go idle.
        # Rounds spread a burst of load from other processes over the runtimes.
        for _ in range(mode["rounds"]):
            for key, predictor in predictors.items():
                time.sleep(0.5)
                raw = time_calls(lambda: predictor(x), runs, warmup=mode["warmup"])
                out["runtimes"][key]["raw_latency_ms"].setdefault(f"b{batch}", []).extend(raw)
    load.update(loadavg_after=os.getloadavg(), other_processes_cpu_share=others_cpu_share(before, cpu_snapshot()))
    out["timing_load"] = load
    for r in out["runtimes"].values():
        for batch in BATCHES:
            r[f"latency_ms_b{batch}"] = statistics.median(r["raw_latency_ms"][f"b{batch}"])
            r[f"ms_per_image_b{batch}"] = r[f"latency_ms_b{batch}"] / batch
    base, fp32 = out["runtimes"]["pytorch"], out["runtimes"]["onnx_fp32"]
    for key, r in out["runtimes"].items():
        r["speedup_vs_pytorch"] = {f"b{b}": base[f"latency_ms_b{b}"] / r[f"latency_ms_b{b}"] for b in BATCHES}
        r["speedup_vs_onnx_fp32"] = {f"b{b}": fp32[f"latency_ms_b{b}"] / r[f"latency_ms_b{b}"] for b in BATCHES}
        r["metric_delta_vs_pytorch"] = r["metric_value"] - base["metric_value"]
    return out


def print_report(result: dict) -> None:
    head = (f"{'task':15} {'runtime':18} {'b1 ms':>8} {'b32 ms':>8} {'b32 ms/img':>10} {'x eager b1':>10} "
            f"{'x eager b32':>11} {'size MB':>8} {'metric':>7} {'value':>7} {'delta':>7}")
    print("\n" + head + "\n" + "-" * len(head))
    for task, res in result["tasks"].items():
        for key, r in res["runtimes"].items():
            print(f"{task:15} {r['label']:18} {r['latency_ms_b1']:>8.2f} {r['latency_ms_b32']:>8.2f} "
                  f"{r['ms_per_image_b32']:>10.2f} {r['speedup_vs_pytorch']['b1']:>9.2f}x {r['speedup_vs_pytorch']['b32']:>10.2f}x "
                  f"{r['file_bytes'] / 1e6:>8.2f} {res['metric']:>7} {r['metric_value']:>7.3f} {r['metric_delta_vs_pytorch']:>+7.3f}")
    print("\nINT8 vs ONNX FP32 latency: " + "; ".join(
        f"{task} b1 {res['runtimes']['onnx_int8']['speedup_vs_onnx_fp32']['b1']:.2f}x, "
        f"b32 {res['runtimes']['onnx_int8']['speedup_vs_onnx_fp32']['b32']:.2f}x" for task, res in result["tasks"].items()))
    for task, res in result["tasks"].items():
        n = res["runtimes"]["pytorch"]["val_images"]
        print(f"{task}: input {res['input_hw'][0]}x{res['input_hw'][1]}, {n} val images; latencies are medians of "
              f"{len(res['runtimes']['pytorch']['raw_latency_ms']['b1'])} (b1) / "
              f"{len(res['runtimes']['pytorch']['raw_latency_ms']['b32'])} (b32) calls; "
              f"{busy_note(res['timing_load']['other_processes_cpu_share'])} during its timing")
    m = result["machine"]
    print(f"machine: {m['cpu_model']}, {m['cpu_cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
          f"onnxruntime {m['onnxruntime']}; mode {result['mode_name']}; total {result['wall_time_s']:.0f} s; "
          f"{busy_note(result['other_processes_cpu_share_whole_run'])} over the whole run")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1-2 minute run: smaller images, fewer epochs and timing runs")
    ap.add_argument("--out", type=Path, help="working folder (default: a temporary folder, deleted afterwards)")
    ap.add_argument("--tasks", nargs="+", choices=[r["task"] for r in TASKS], help="only these rows of TASKS")
    ap.add_argument("--reuse", action="store_true", help="skip data/train/export: re-evaluate and re-time the models an "
                    "earlier run left in --out (same mode)")
    args = ap.parse_args(argv)
    if args.reuse and not args.out:
        ap.error("--reuse needs --out DIR of an earlier run")
    mode_name = "quick" if args.quick else "full"
    mode, rows = MODES[mode_name], [r for r in TASKS if not args.tasks or r["task"] in args.tasks]
    started, whole = time.perf_counter(), cpu_snapshot()

    def log(msg):
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", flush=True)

    results, steps = {}, {}
    with tempfile.TemporaryDirectory(prefix="tkit-bench-inference-") as tmp:
        base = (args.out or Path(tmp)).resolve()
        for row in rows:
            root = base / row["task"]
            if not args.reuse:
                steps[row["task"]] = prepare(row, mode_name, root, log)
            results[row["task"]] = measure(row, mode_name, mode, root, log)
            results[row["task"]]["settings"] = {"demo": row["demo"], "demo_options": row["demo_options"],
                                                "overrides": overrides_for(row, mode_name, Path("DATA"))}
    result = {"mode_name": mode_name, "mode": mode, "command": " ".join(sys.argv), "reused_models": args.reuse,
              "tasks": results, "step_wall_time_s": steps,
              "other_processes_cpu_share_whole_run": others_cpu_share(whole, cpu_snapshot()),
              "wall_time_s": round(time.perf_counter() - started, 1)}
    path = write_results(NAME, result)
    result = json.loads(path.read_text())
    print_report(result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
