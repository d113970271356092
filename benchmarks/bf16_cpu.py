"""bf16-mixed against fp32 training on the CPU: the same tiny classification budget, speed and accuracy of each.

    python benchmarks/bf16_cpu.py --quick     # ~3 min on a 2-core CPU: 64 px, 250 images, 4 epochs, 1 round
    python benchmarks/bf16_cpu.py             # longer: 96 px, 500 images, 6 epochs, 2 rounds

Run by hand, never by the tests. Each run is `transferkit.api.train("classification", ...)` (the real path:
ImageNet MobileNetV2 from the package, SGD, cosine schedule, channels_last) with train.precision=32 or
train.precision=bf16-mixed, in a fresh Python process (oneDNN's kernel cache and the allocator start cold for
each); the order alternates round by round. Same data, seed, epochs, batch size and learning rate for both.

What is timed: the training steps (forward, backward, optimizer step: Lightning's on_train_batch_start to
on_train_batch_end) of every epoch after the first, which is the warm-up (kernel selection). Loading batches,
validation and checkpoints are outside it. images/s = images in the timed steps / their wall time; CPU ms per
image = this process's CPU time (all threads) in the same steps / images: on a machine other processes keep
busy it measures the work, less the share of the cores the run happened to get. The ratio printed is
bf16/fp32 images/s, median over rounds; the val accuracy of each is after the last epoch.

Whether the CPU has bfloat16 in hardware (avx512_bf16 / amx_bf16, read from /proc/cpuinfo) decides the
outcome: without it bf16 kernels are emulated, and transferkit logs a warning when train.precision=bf16-mixed.

Result on the development machine (`python benchmarks/bf16_cpu.py --quick`, benchmarks/results/bf16_cpu_quick.json):
AMD EPYC with avx512_bf16 (no AMX), 2 cores, torch 2.14.1, other processes using 64-68% of the CPU meanwhile:

    32          14.0 images/s,  51.8 CPU ms/image, val acc 0.340, train loss 1.523
    bf16-mixed  13.8 images/s,  48.1 CPU ms/image, val acc 0.300, train loss 1.285
    MobileNetV2 64 px, batch 32, 4 epochs (250 training images)
    CPU time per image fp32/bf16: 1.078
    ratio: 0.98  (bf16-mixed / fp32 images/s)

So on this CPU bf16-mixed trains (accuracy of the same order after the same budget: 100 val images, one
seed) but buys no speed for MobileNetV2 at this size. The machine was shared: two earlier quick runs of other
settings (batch 16, 80 images, 3 and 5 epochs) gave ratios of 0.67 and 0.35, with bf16 also using 1.5-2x the CPU
time per image there. Treat it as "no gain here, possibly a loss", not as a precise figure; --rounds 3 on an
idle machine narrows it. (Full mode has not been run on this machine.)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

from common import busy_note, cpu_snapshot, others_cpu_share, write_results  # noqa: E402

MODES = {  # network input px, source image px, train / val images per class, epochs (the first untimed), rounds
    "quick": {"image_size": 64, "source_size": 64, "per_class": 25, "val_per_class": 10, "epochs": 4, "rounds": 1,
              "batch": 32, "learning_rate": 0.01},
    "full": {"image_size": 96, "source_size": 96, "per_class": 50, "val_per_class": 15, "epochs": 6, "rounds": 2,
             "batch": 32, "learning_rate": 0.01},
}
PRECISIONS = ("32", "bf16-mixed")

CHILD = r"""
import json, sys, time
import lightning.pytorch as pl
import transferkit.engine.trainer as trainer_module
from transferkit import api
from transferkit.engine.trainer import cpu_native_bf16

data, out, precision, mode = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])

class StepTimer(pl.Callback):
    def __init__(self):
        self.wall, self.cpu, self.images = 0.0, 0.0, 0
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.t0, self.c0 = time.perf_counter(), time.process_time()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch >= 1:  # epoch 0 is the warm-up
            self.wall += time.perf_counter() - self.t0
            self.cpu += time.process_time() - self.c0
            self.images += len(batch[1])

timer = StepTimer()
build = trainer_module.build_trainer
def with_timer(*args, **kwargs):
    kwargs["callbacks"] = [*kwargs.get("callbacks", ()), timer]
    return build(*args, **kwargs)
trainer_module.build_trainer = with_timer  # api.train imports it at call time

overrides = [f"data.train_dir={data}/train", f"data.val_dir={data}/val", f"data.image_size={mode['image_size']}",
             "model.backbone=mobilenet_v2", "model.pretrained=true", f"train.epochs={mode['epochs']}",
             f"train.batch_size={mode['batch']}", "train.num_workers=0", f"train.learning_rate={mode['learning_rate']}",
             "train.accelerator=cpu", f"train.precision={precision}", "train.histograms=false",
             f"evaluation.batch_size={mode['batch']}"]
t0 = time.perf_counter()
metrics = api.train("classification", None, out, overrides, overwrite=True)
print("RESULT " + json.dumps({
    "precision": precision, "timed_images": timer.images, "timed_s": round(timer.wall, 3),
    "timed_cpu_s": round(timer.cpu, 3), "images_per_s": round(timer.images / timer.wall, 2),
    "cpu_ms_per_image": round(1000 * timer.cpu / timer.images, 2), "val_acc": metrics["final"].get("val/acc"),
    "best_val_acc": metrics["best"].get("val/acc"), "final_train_loss": metrics["final"].get("train/loss"),
    "run_total_s": round(time.perf_counter() - t0, 2), "cpu_native_bf16": cpu_native_bf16()}))
"""


def run(data: Path, out: Path, precision: str, mode: dict) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(data), str(out), precision, json.dumps(mode)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"run {precision} failed:\n{proc.stderr[-3000:]}")
    return json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="64 px, 250 training images, 4 epochs, 1 round")
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args()
    name = "quick" if args.quick else "full"
    mode = dict(MODES[name])
    if args.rounds:
        mode["rounds"] = args.rounds

    import torch

    from transferkit.data.demo import build_demo
    from transferkit.engine.trainer import cpu_native_bf16

    native = cpu_native_bf16()
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16: {native}", flush=True)
    runs: dict[str, list[dict]] = {p: [] for p in PRECISIONS}
    ratios = []
    with tempfile.TemporaryDirectory(prefix="tkit_bf16_") as tmp:
        data = Path(tmp) / "digits"
        build_demo("digits", data, seed=0, per_class=mode["per_class"], val_per_class=mode["val_per_class"],
                   size=mode["source_size"])
        for r in range(mode["rounds"]):
            order = PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]
            this_round = {}
            for precision in order:
                before = cpu_snapshot()
                res = run(data, Path(tmp) / f"run_{precision}_{r}", precision, mode)
                res["others_cpu_share"] = others_cpu_share(before, cpu_snapshot())
                runs[precision].append(res)
                this_round[precision] = res
                print(f"  round {r + 1} {precision:<10} {res['images_per_s']:7.1f} images/s, "
                      f"{res['cpu_ms_per_image']:7.1f} CPU ms/image, val acc {res['val_acc']:.3f}, "
                      f"train loss {res['final_train_loss']:.3f} ({busy_note(res['others_cpu_share'])})", flush=True)
            ratios.append(this_round["bf16-mixed"]["images_per_s"] / this_round["32"]["images_per_s"])
    med = {p: {k: statistics.median(r[k] for r in rs) for k in ("images_per_s", "cpu_ms_per_image", "val_acc")}
           for p, rs in runs.items()}
    ratio = round(statistics.median(ratios), 3)
    cpu_ratio = round(med["32"]["cpu_ms_per_image"] / med["bf16-mixed"]["cpu_ms_per_image"], 3)
    print(f"\nMobileNetV2 {mode['image_size']} px, batch {mode['batch']}, {mode['epochs']} epochs "
          f"({mode['per_class'] * 10} training images): fp32 {med['32']['images_per_s']:.1f} images/s, "
          f"val acc {med['32']['val_acc']:.3f}; bf16-mixed {med['bf16-mixed']['images_per_s']:.1f} images/s, "
          f"val acc {med['bf16-mixed']['val_acc']:.3f}")
    print(f"CPU time per image fp32/bf16: {cpu_ratio}")
    print(f"ratio: {ratio}  (bf16-mixed / fp32 images/s)")
    path = write_results(f"bf16_cpu_{name}" if name == "quick" else "bf16_cpu", {
        "mode": name, "settings": {**mode, "backbone": "mobilenet_v2", "pretrained": True, "workers": 0},
        "command": f"python benchmarks/bf16_cpu.py{' --quick' if args.quick else ''}",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_native_bf16": native,
        "what_is_timed": "training steps (forward, backward, optimizer step) of every epoch after the first",
        "median": med, "ratio_bf16_over_fp32_images_per_s": ratio, "ratio_fp32_over_bf16_cpu_ms_per_image": cpu_ratio,
        "runs": runs})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
