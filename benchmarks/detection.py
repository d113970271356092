"""DetectNet_v2 vs YOLOv4-tiny (vs Ultralytics YOLOv8n when installed) on the demo detection set, same budget.

    python benchmarks/detection.py --quick      # ~2-3 min: 60 train / 20 val images, 30 s of training per model
    python benchmarks/detection.py              # full: 240 train / 80 val images, 90 s of training per model
    python benchmarks/detection.py --extra-path /opt/bench_pkgs   # where `ultralytics` is installed, if not in the venv

Every model trains on the same KITTI-format `kitti_digits` images at 128x128 for the same wall-clock budget:
a 2-epoch probe run measures the epoch time, the real run gets as many epochs as fit the budget (and
train.max_minutes as a safety net). Scored on the held-out val split by transferkit's AP code in COCO mode
(101-point, pycocotools-equal): mAP@0.5 and mAP@[.5:.95]. Ultralytics' predictions are written as KITTI files
and scored by the same code (`evaluate` with evaluation.predictions=DIR), so the numbers compare.
Also: training images/s (train images x epochs / fit wall time, validation included), eager PyTorch and ONNX
Runtime latency at batch 1 (YOLO's ONNX includes decoding and NMS; its eager time is the network only).
Ultralytics (AGPL) is a benchmark-only reference, never a transferkit dependency. Run by hand; tests never run it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from common import busy_note, cpu_snapshot, others_cpu_share, time_calls, train_for_budget, write_results  # noqa: E402,E501

import torch  # noqa: E402

from transferkit import api  # noqa: E402
from transferkit.data.demo import build_demo  # noqa: E402
from transferkit.tasks import get_task  # noqa: E402

MODES = {
    "quick": {"num_train": 60, "num_val": 20, "budget_s": 30, "latency_runs": 10},
    "full": {"num_train": 240, "num_val": 80, "budget_s": 90, "latency_runs": 30},
}
SIZE = 128
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# (key, label, task, spec, overrides)
MODELS = [
    ("detectnet_v2", "DetectNet_v2, MobileNetV2 ImageNet", "detectnet_v2", EXAMPLES / "detectnet_v2.yaml", []),
    ("yolo_v4_tiny", "YOLOv4-tiny, MobileNetV2 ImageNet", "yolo_v4_tiny", EXAMPLES / "yolo_v4_tiny.yaml", []),
    ("yolo_v4_tiny_csp", "YOLOv4-tiny, CSPDarknet-tiny scratch", "yolo_v4_tiny", EXAMPLES / "yolo_v4_tiny.yaml",
     ["model.backbone=cspdarknet_tiny", "model.pretrained=false"]),
]


def data_overrides(data: Path) -> list[str]:
    return [f"data.{split}_{kind}={data / split / kind}" for split in ("train", "val") for kind in ("images", "labels")]


def train_one(key: str, task: str, spec: Path, overrides: list[str], root: Path, budget_s: float, log) -> dict:
    # The probe's second epoch (with validation; the first also pays warm-up) gives the epoch time.
    row = train_for_budget(task, spec, key, overrides, root, budget_s, probe_epochs=2, log=log)
    return {"epochs_planned": row["epochs_planned"], "epochs_run": row["epochs"], "probe_epoch_s": row["probe_epoch_s"],
            "fit_wall_s": row["fit_wall_s"], "train_epoch_s": row["train_epoch_s"]}


def score(task: str, spec: Path, overrides: list[str], root: Path, name: str, **kwargs) -> dict:
    metrics = api.evaluate(task, spec, root / name, overrides + ["evaluation.mode=coco"], **kwargs)
    return {"mAP50": metrics["mAP"], "mAP50_95": metrics["AP50_95"]}


def latency(task: str, ckpt: Path, onnx: Path, runs: int) -> dict:
    t = get_task(task)
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    eager, ort = api.load_predictor(t, ckpt), api.load_predictor(t, onnx)
    raw = {"eager": [], "onnx": []}
    for _ in range(3):  # rounds, so a burst of load from other processes is spread over both
        raw["eager"] += time_calls(lambda: eager(x), runs, warmup=3)
        raw["onnx"] += time_calls(lambda: ort(x), runs, warmup=3)
    return {"eager_ms_b1": statistics.median(raw["eager"]), "onnx_ms_b1": statistics.median(raw["onnx"]),
            "raw_ms": raw}


ULTRALYTICS_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from ultralytics import YOLO
    cfg = json.loads(sys.argv[1])
    model = YOLO("yolov8n.yaml")  # architecture only: trained from scratch, nothing downloaded
    t0 = time.perf_counter()
    model.train(data=cfg["data_yaml"], epochs=cfg["epochs"], imgsz=cfg["size"], batch=8, device="cpu", workers=2,
                pretrained=False, amp=False, plots=False, project=cfg["project"], name="train", exist_ok=True,
                verbose=False, seed=0, deterministic=False, fliplr=0.0)
    fit = time.perf_counter() - t0
    rows = {}
    for result in model.predict(source=cfg["val_images"], imgsz=cfg["size"], conf=0.001, iou=0.5, max_det=200,
                                device="cpu", verbose=False, stream=True):
        b = result.boxes
        rows[Path(result.path).stem] = [[float(v) for v in xyxy] + [float(s), int(c)]
                                        for xyxy, s, c in zip(b.xyxy.tolist(), b.conf.tolist(), b.cls.tolist())]
    Path(cfg["out"]).write_text(json.dumps({"fit_s": fit, "predictions": rows}))
""")


def ultralytics_row(data: Path, root: Path, budget_s: float, extra_path: str | None, log) -> dict | None:
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(root / "ultra_cfg")}
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra_path, env.get("PYTHONPATH")]))
    found = subprocess.run([sys.executable, "-c", "import ultralytics; print(ultralytics.__version__)"], env=env,
                           capture_output=True, text=True)
    if found.returncode != 0:
        log("   ultralytics is not installed: no YOLOv8n reference row (pip install ultralytics, or --extra-path)")
        return None
    version = found.stdout.strip().splitlines()[-1]
    from transferkit.vision.boxes import DetectionDataset, ImageBoxes
    from transferkit.vision.convert import write_kitti
    from transferkit.vision.formats import read_kitti

    ydir = root / "ultra_data"
    classes = None
    for split in ("train", "val"):
        ds = read_kitti(data / split / "images", data / split / "labels", classes)
        classes = ds.classes
        (ydir / split / "images").mkdir(parents=True, exist_ok=True)
        (ydir / split / "labels").mkdir(parents=True, exist_ok=True)
        for item in ds.items:
            link = ydir / split / "images" / Path(item.image).name
            if not link.exists():
                link.symlink_to(Path(item.image).resolve())
            lines = [f"{int(c)} {(x1 + x2) / 2 / item.width:.6f} {(y1 + y2) / 2 / item.height:.6f} "
                     f"{(x2 - x1) / item.width:.6f} {(y2 - y1) / item.height:.6f}"
                     for (x1, y1, x2, y2), c in zip(item.boxes.tolist(), item.labels.tolist())]
            (ydir / split / "labels" / f"{Path(item.image).stem}.txt").write_text("\n".join(lines) + "\n")
    data_yaml = ydir / "data.yaml"
    data_yaml.write_text(json.dumps({"path": str(ydir), "train": "train/images", "val": "val/images",
                                     "names": {i: n for i, n in enumerate(classes)}}))
    out = root / "ultra_predictions.json"

    def run(epochs: int) -> dict:
        cfg = {"data_yaml": str(data_yaml), "epochs": epochs, "size": SIZE, "project": str(root / "ultra_runs"),
               "val_images": str(ydir / "val" / "images"), "out": str(out)}
        done = subprocess.run([sys.executable, "-c", ULTRALYTICS_SCRIPT, json.dumps(cfg)], env=env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"ultralytics run failed:\n{done.stderr[-3000:]}")
        return json.loads(out.read_text())

    probe = run(1)  # includes ultralytics' own per-epoch validation, as our probe does
    epochs = max(1, int(budget_s // probe["fit_s"]))
    log(f"   yolov8n: {probe['fit_s']:.1f} s per epoch -> {epochs} epochs in {budget_s:.0f} s")
    result = run(epochs)
    val = read_kitti(data / "val" / "images", data / "val" / "labels", classes)
    items = []
    for item in val.items:
        rows = result["predictions"].get(Path(item.image).stem, [])
        items.append(ImageBoxes(image=item.image, boxes=[r[:4] for r in rows] or [[0, 0, 0, 0]][:0],
                                labels=[r[5] for r in rows], scores=[r[4] for r in rows],
                                width=item.width, height=item.height))
    write_kitti(DetectionDataset(classes=classes, items=items), root / "ultra_kitti")
    spec = EXAMPLES / "detectnet_v2.yaml"  # any detection task scores prediction files the same way
    scores = score("detectnet_v2", spec, data_overrides(data) + [f"evaluation.predictions={root / 'ultra_kitti'}"],
                   root, "ultra_eval")
    return {"label": f"Ultralytics YOLOv8n {version}, scratch", "epochs_planned": epochs, "epochs_run": epochs,
            "probe_epoch_s": round(probe["fit_s"], 2), "fit_wall_s": round(result["fit_s"], 1), **scores}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small set, 30 s of training per model")
    ap.add_argument("--out", type=Path, help="working folder (default: a temporary folder, deleted afterwards)")
    ap.add_argument("--budget", type=float, help="seconds of training per model (default: by mode)")
    ap.add_argument("--extra-path", help="a folder to put on PYTHONPATH for the ultralytics reference run")
    args = ap.parse_args(argv)
    mode_name = "quick" if args.quick else "full"
    mode = dict(MODES[mode_name])
    if args.budget:
        mode["budget_s"] = args.budget
    started = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", flush=True)

    rows = {}
    with tempfile.TemporaryDirectory(prefix="tkit-det-bench-") as tmp:
        root = (args.out or Path(tmp)).resolve()
        data = root / "data"
        build_demo("kitti_digits", data, seed=0, num_train=mode["num_train"], num_val=mode["num_val"],
                   width=SIZE, height=SIZE)
        common = data_overrides(data) + [f"data.image_width={SIZE}", f"data.image_height={SIZE}",
                                         "train.histograms=false"]
        before = cpu_snapshot()
        for key, label, task, spec, extra in MODELS:
            log(f"-- {label}")
            overrides = common + extra
            if task == "yolo_v4_tiny":  # anchors fitted to these labels, as a user would
                fitted = api.run_extra_verb(task, "kmeans", spec, root / f"{key}_anchors", overrides)
                overrides += [f"model.mid_anchor_shape={fitted['mid_anchor_shape']}",
                              f"model.big_anchor_shape={fitted['big_anchor_shape']}"]
            row = {"label": label, "task": task, **train_one(key, task, spec, overrides, root, mode["budget_s"], log)}
            ckpt = root / key / "best.ckpt"
            row.update(score(task, spec, overrides, root, f"{key}_eval", model=ckpt))
            api.export(task, spec, root / f"{key}_export", overrides, model=ckpt)
            row.update(latency(task, ckpt, root / f"{key}_export" / "model.onnx", mode["latency_runs"]))
            row["train_images_per_s"] = round(mode["num_train"] * row["epochs_run"] / row["fit_wall_s"], 1)
            rows[key] = row
        reference = ultralytics_row(data, root, mode["budget_s"], args.extra_path, log)
        if reference:
            reference["train_images_per_s"] = round(mode["num_train"] * reference["epochs_run"] / reference["fit_wall_s"], 1)
            rows["yolov8n"] = reference
        busy = others_cpu_share(before, cpu_snapshot())

    result = {"mode_name": mode_name, "mode": mode, "image_size": SIZE, "command": " ".join(sys.argv),
              "rows": rows, "machine": {"other_processes_cpu_share": busy},
              "wall_time_s": round(time.perf_counter() - started, 1)}
    path = write_results("detection", result)
    head = f"{'model':40} {'epochs':>6} {'img/s':>6} {'mAP50':>6} {'mAP50-95':>8} {'eager ms':>8} {'ONNX ms':>8}"
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows.values():
        eager = f"{r['eager_ms_b1']:.2f}" if "eager_ms_b1" in r else "-"
        ort = f"{r['onnx_ms_b1']:.2f}" if "onnx_ms_b1" in r else "-"
        print(f"{r['label']:40} {r['epochs_run']:>6} {r['train_images_per_s']:>6.1f} {r['mAP50']:>6.3f} "
              f"{r['mAP50_95']:>8.3f} {eager:>8} {ort:>8}")
    print(f"\n{mode['num_train']} train / {mode['num_val']} val images at {SIZE}x{SIZE}, {mode['budget_s']:.0f} s of "
          f"training per model; COCO-style AP by transferkit (pycocotools-equal); {busy_note(busy)}")
    if "yolov8n" in rows:
        best = max((r for k, r in rows.items() if k != "yolov8n"), key=lambda r: r["mAP50"])
        print(f"ratio: best transferkit mAP50 / YOLOv8n mAP50 = {best['mAP50'] / max(rows['yolov8n']['mAP50'], 1e-9):.2f}")
    print(f"wrote {path}; total {result['wall_time_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
