"""Does ImageNet pre-training pay off on a small data set? Val accuracy per epoch, ImageNet vs random weights.

    python benchmarks/transfer.py --quick          # ~1 min idle: 25 and 50 images per class, 3 epochs (a smoke run)
    python benchmarks/transfer.py                  # full mode, ~4 min on an idle 2-core CPU: 25/50/100/all per class, 5 epochs
    python benchmarks/transfer.py --per-class 25 100 --epochs 8 --lr 0.02   # other sizes / budget / learning rate

MobileNetV2 from the zoo's ImageNet weights and the same network from random weights are trained
(`api.train`, same spec, seed and budget) on the `digits` demo set with 25, 50, 100 and all training
images per class. "All" is every distinct handwritten sample left per class after the val hold-out
(the smallest class decides: 159 with val_per_class=15). Every run is validated on the same held-out
val folder (150 images whose handwritten samples are never used for training). The training subsets
are separate `build_demo` builds with per_class=N; the demo draws each image from its own random
stream, so the N-image set is exactly the first N images of every larger one.

Per-epoch val accuracy is read from each run's status.json (the `val/acc` that api.train also writes
to TensorBoard). For each curve the table gives
    start = val accuracy after epoch 1,
    slope = mean gain per epoch over the first SLOPE_EPOCHS epochs = (acc[3] - acc[1]) / 2,
    final = val accuracy after the last epoch (and best = the highest of any epoch).
Writes the curves to benchmarks/results/transfer.png and every number to benchmarks/results/transfer.json.
Run by hand; the tests never run it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

from common import RESULTS_DIR, busy_note, cpu_snapshot, others_cpu_share, write_results  # noqa: E402
from transferkit import api  # noqa: E402
from transferkit.data.demo import build_demo  # noqa: E402

NAME = "transfer"
TASK = "classification"
PLOT = RESULTS_DIR / "transfer.png"
VAL_PER_CLASS = 15  # the demo's default hold-out: 150 val images
SLOPE_EPOCHS = 3  # slope = mean per-epoch gain from epoch 1 to epoch SLOPE_EPOCHS
INITS = {"imagenet": "model.pretrained=true", "random": "model.pretrained=false"}
MODES = {  # training images per class ("all" = every distinct sample), epochs, input size (the demo images are built at it)
    "quick": {"per_class": [25, 50], "epochs": 3, "image_size": 64},
    "full": {"per_class": [25, 50, 100, "all"], "epochs": 5, "image_size": 64},
}
# The settings of examples/classification.yaml, except the image size and epochs (by mode) and the learning rate:
# at 64 px the example's 0.02 (no warm-up) made the ImageNet run on 100 images per class diverge in epoch 1 (train
# loss 2.93 > ln 10, val loss 9.97) and end at chance-like 0.21, while 0.01 reached 0.91 by epoch 3.
LEARNING_RATE = 0.01
SETTINGS = ["model.backbone=mobilenet_v2", "data.augmentation.horizontal_flip=0.0", "train.batch_size=32",
            "train.optimizer=sgd", "train.warmup_epochs=0", "train.num_workers=2", "train.histograms=false"]


def all_per_class() -> int:
    """Distinct handwritten samples per class left for training after the val hold-out (smallest class)."""
    from sklearn.datasets import load_digits

    return int(min(list(load_digits().target).count(d) for d in range(10))) - VAL_PER_CLASS


def curve(run: Path) -> tuple[list[float], list[float]]:
    """(val/acc, epoch seconds) per epoch from the run's status.json."""
    records = [json.loads(line) for line in (run / "status.json").read_text().splitlines() if line.strip()]
    return [r["val/acc"] for r in records], [r["epoch_time_s"] for r in records]


def summarise(acc: list[float]) -> dict:
    k = min(SLOPE_EPOCHS, len(acc))
    return {"start": acc[0], "slope": (acc[k - 1] - acc[0]) / (k - 1) if k > 1 else None, "slope_epochs": k,
            "final": acc[-1], "best": max(acc), "best_epoch": acc.index(max(acc)) + 1}


def plot(runs: list[dict], epochs: int, path: Path) -> str:
    """One panel per training-set size, ImageNet (solid) vs random (dashed); matplotlib is a transferkit dependency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(dict.fromkeys(r["per_class_label"] for r in runs))
    fig, axes = plt.subplots(1, len(sizes), figsize=(3.2 * len(sizes), 3.2), sharey=True, squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for r in (r for r in runs if r["per_class_label"] == size):
            style = {"imagenet": ("-", "o", "tab:blue"), "random": ("--", "s", "tab:orange")}[r["init"]]
            ax.plot(range(1, len(r["val_acc"]) + 1), r["val_acc"], linestyle=style[0], marker=style[1], color=style[2],
                    label=f"{'ImageNet' if r['init'] == 'imagenet' else 'random init'}")
        n = next(r["per_class"] for r in runs if r["per_class_label"] == size)
        ax.set_title(f"all: {n} per class ({n * 10} images)" if size == "all" else f"{size} per class ({n * 10} images)")
        ax.set_xlabel("epoch")
        ax.set_xticks(range(1, epochs + 1))
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("val accuracy (150 held-out images)")
    axes[0][0].legend(loc="upper left", fontsize=8)
    fig.suptitle("MobileNetV2 on the digits demo: ImageNet weights vs random init", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return "matplotlib"


def print_report(result: dict) -> None:
    runs = result["runs"]
    head = (f"{'per class':>9} {'train imgs':>10} {'init':>9} {'start':>6} {'slope/ep':>8} {'final':>6} {'best':>6} "
            f"{'best ep':>7} {'s/epoch':>7}  val acc per epoch")
    print("\n" + head + "\n" + "-" * (len(head) + 20))
    for r in runs:
        s = r["summary"]
        print(f"{r['per_class_label']:>9} {r['train_images']:>10} {r['init']:>9} {s['start']:>6.3f} {s['slope']:>+8.3f} "
              f"{s['final']:>6.3f} {s['best']:>6.3f} {s['best_epoch']:>7} {r['median_epoch_s']:>7.1f}  "
              + " ".join(f"{a:.2f}" for a in r["val_acc"]))
    print(f"\nslope = (acc after epoch {SLOPE_EPOCHS} - acc after epoch 1) / {SLOPE_EPOCHS - 1}; "
          f"all runs validated on the same {runs[0]['val_images']} held-out images (1 image = {100 / runs[0]['val_images']:.2f} points)")
    print("ImageNet minus random, final accuracy: " + ", ".join(
        f"{label}/class {100 * gap:+.1f} pts" for label, gap in result["final_gap_imagenet_minus_random"].items()))
    m = result["machine"]
    print(f"mode {result['mode_name']} {result['mode']}; machine: {m['cpu_model']}, {m['cpu_cores']} cores, torch {m['torch']}; "
          f"total {result['wall_time_s']:.0f} s; {busy_note(result['other_processes_cpu_share'])} (epoch times only)")
    print(f"wrote {result['plot']} ({result['plot_backend']}) and {RESULTS_DIR / (NAME + '.json')}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1-2 minute run: two small training sets, 3 epochs")
    ap.add_argument("--out", type=Path, help="working folder (default: a temporary folder, deleted afterwards)")
    ap.add_argument("--per-class", nargs="+", help="training images per class, numbers or 'all' (default: by mode)")
    ap.add_argument("--epochs", type=int, help="epochs per run (default: by mode)")
    ap.add_argument("--lr", type=float, default=LEARNING_RATE, help=f"train.learning_rate for every run (default {LEARNING_RATE})")
    args = ap.parse_args(argv)
    mode_name = "quick" if args.quick else "full"
    mode = dict(MODES[mode_name])
    if args.per_class:
        mode["per_class"] = [p if p == "all" else int(p) for p in args.per_class]
    if args.epochs:
        mode["epochs"] = args.epochs
    settings = SETTINGS + [f"train.learning_rate={args.lr}"]
    every = all_per_class()
    started, before = time.perf_counter(), cpu_snapshot()

    def log(msg):
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", flush=True)

    runs = []
    with tempfile.TemporaryDirectory(prefix="tkit-bench-transfer-") as tmp:
        root = (args.out or Path(tmp)).resolve()
        counts = {label: every if label == "all" else label for label in mode["per_class"]}
        largest = max(counts.values())
        if largest > every:
            ap.error(f"--per-class {largest} is more than the {every} distinct samples per class ('all')")
        val = root / f"data_{largest}" / "val"  # one val folder for every run (identical in every build anyway)
        for label, n in counts.items():
            log(f"build_demo('digits', per_class={n}, val_per_class={VAL_PER_CLASS}, size={mode['image_size']})")
            build_demo("digits", root / f"data_{n}", seed=0, per_class=n, val_per_class=VAL_PER_CLASS, size=mode["image_size"])
        for label, n in counts.items():
            for init, override in INITS.items():
                log(f"train {init} weights on {n} images per class, {mode['epochs']} epochs")
                run = root / f"run_{n}_{init}"
                t0 = time.perf_counter()
                metrics = api.train(TASK, None, run, settings + [
                    override, f"data.train_dir={root / f'data_{n}' / 'train'}", f"data.val_dir={val}",
                    f"data.image_size={mode['image_size']}", f"train.epochs={mode['epochs']}"], overwrite=True)
                acc, epoch_s = curve(run)
                runs.append({"per_class_label": label, "per_class": n, "init": init, "train_images": metrics["train_images"],
                             "val_images": metrics["val_images"], "val_acc": acc, "epoch_time_s": epoch_s,
                             "median_epoch_s": sorted(epoch_s)[len(epoch_s) // 2], "summary": summarise(acc),
                             "final_metrics": metrics["final"], "wall_time_s": round(time.perf_counter() - t0, 1)})
    share = others_cpu_share(before, cpu_snapshot())
    gap = {}
    for label in mode["per_class"]:
        final = {r["init"]: r["summary"]["final"] for r in runs if r["per_class_label"] == label}
        gap[str(label)] = final["imagenet"] - final["random"]
    backend = plot(runs, mode["epochs"], PLOT)
    result = {"mode_name": mode_name, "mode": mode, "command": " ".join(sys.argv), "all_per_class": every,
              "val_per_class": VAL_PER_CLASS, "settings": settings, "slope_definition":
              f"(val_acc[epoch {SLOPE_EPOCHS}] - val_acc[epoch 1]) / {SLOPE_EPOCHS - 1}", "runs": runs,
              "final_gap_imagenet_minus_random": gap, "plot": str(PLOT), "plot_backend": backend,
              "other_processes_cpu_share": share, "wall_time_s": round(time.perf_counter() - started, 1)}
    path = write_results(NAME, result)
    print_report(json.loads(path.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
