"""Training images/s of `tkit classification train` (the real path) against hand-written PyTorch loops.

    python benchmarks/train_throughput.py --quick     # ~1.5 min on an idle 2-core CPU: 128 px, 2 rounds
    python benchmarks/train_throughput.py             # full mode, ~4 min: 224 px, 2 rounds
    python benchmarks/train_throughput.py --rounds 5 --no-naive    # more rounds, without the slow NCHW loop
    python benchmarks/train_throughput.py --untuned     # also the real path with glibc malloc left alone
    python benchmarks/train_throughput.py --cache --bf16 --compile   # also data.cache=ram, bf16-mixed, both, compile
    python benchmarks/train_throughput.py --source-size 1024 --cache   # camera-sized source files
    python benchmarks/train_throughput.py --device-aug  # also data.augment_on=device (augmentation batched on the device)
    python benchmarks/train_throughput.py --gpu         # ResNet-18, bf16 AMP, on a CUDA GPU

Three ways of training the same network on the same image files, round after round, each run in a fresh
Python process (nothing one run leaves behind -- allocator state, oneDNN's kernel cache, the malloc
settings the real path applies to its process -- reaches the next; the order rotates every round, so
drifting load from other processes hits each one alike):

  real   `transferkit.api.train("classification", ...)` -- the spec, ImageFolder reading with the image
         checks, the task's transforms, its DataLoader, Lightning, the TensorBoard logger, status.json,
         checkpoints every epoch, weight histograms: everything a user's `tkit classification train` runs.
  hand   a minimal hand-written loop: torchvision's ImageFolder over the same files, the same transforms
         (written out with torchvision), the same batch size and number of DataLoader workers (persistent,
         like the real path's), the same network (ImageNet MobileNetV2 + linear head from the task's
         builder), channels_last, the same optimiser (SGD, Nesterov momentum, weight decay on weights only),
         the same per-step cosine schedule and loss, and the same validation pass at each epoch's end.
  naive  the hand loop in the default NCHW memory layout (what most tutorials write).
  real_cache (--cache)  the real path with data.cache=ram: every image decoded once, epochs augment from pixels.
  real_device_aug (--device-aug)  the real path with data.augment_on=device: workers only decode to uint8
                        squares, crop / flips / colour jitter / normalisation run batched on the training device.
  real_bf16 (--bf16)    the real path with train.precision=bf16-mixed (CPUs with avx512_bf16 or AMX);
                        with both flags also real_cache_bf16.
  real_compile (--compile)  the real path with train.compile=true (inductor); its compile time falls in the
                        untimed warm-up epochs, and is in run_total_s.
  real_untuned (--untuned)  the real path with TKIT_MALLOC_TUNING=0: what transferkit's glibc malloc
         setting (transferkit/engine/memory.py) buys. The hand loops run with glibc's defaults, as a
         user's own script would.

What is timed, the same for all three: steady-state epochs. Each run trains W + K epochs; the first W = 2
are the warm-up and are not counted (worker start-up, oneDNN kernel selection, and the allocator settling:
on this 2-core CPU the second epoch still takes ~1.5 s longer than the third, in every variant alike).
The time of the last K epochs is measured from the end of epoch W-1 to the end of the last one, where
"the end of an epoch" is after its validation pass: for the real path the `elapsed_s` that its own status.json records
at every epoch end, for the hand loops `time.perf_counter()` at the same point. So each timed epoch
holds: waiting for batches, the training steps, validation over the (deliberately tiny: one image per
class) val set, and whatever else the path does once per epoch (for the real path: checkpoint writes,
status.json, TensorBoard events, weight histograms of the previous epoch). Run set-up (spec, reading and
checking the dataset, building the model, starting Lightning) is not in it.

images/s = training images in the timed epochs / their time. The ratio real/hand (and real/naive) is
taken per round -- both numbers from the same round -- and the median over rounds is reported. The last
line printed is `ratio: X` (real/hand).

Second view, less at the mercy of other processes: CPU ms per image, the CPU time this process and its
DataLoader workers used in the same window (read from /proc), over the images. On a machine others keep
busy, wall time mostly measures which share of the 2 cores a run happened to get; CPU time measures the
work. For the real path the window's CPU readings come from a wrapper around StatusCallback's epoch-end
hook that reads the clock and /proc after it (it changes nothing else). Also printed: the achieved
GFLOP/s, estimated as 6 x forward MACs per image x images/s (forward, plus about twice that backward).

benchmarks/results/train_throughput.json keeps the machine description, the settings, every epoch time
and CPU reading of every run and the other processes' CPU share during each.

The data: the built-in `digits` demo set drawn at the source size below (a 64 px PNG decodes in no time;
photos do not), with every other training image re-encoded as a JPEG (quality 90), so both decoders run;
32 (quick) or 16 (full) training images per class, one validation image per class.

Epoch size matters to the ratio: the real path does some work once per epoch that the hand loop does not
(last.ckpt, and best.ckpt when val accuracy improved: ~35 ms each on an idle 2-core CPU for MobileNetV2's
18 MB; weight histograms ~25-40 ms; the prediction grid ~15 ms; status.json). That is ~0.1-0.15 s per
epoch: 1-2% of the 320-image 128 px epochs of --quick and of the 160-image 224 px epochs of full mode
(4-6 s each), but ~6% of a 160-image epoch at 128 px (2 s).
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchvision import datasets  # noqa: E402
from torchvision.transforms import v2 as T  # noqa: E402

from common import busy_note, cpu_snapshot, others_cpu_share, tree_cpu_s, write_results  # noqa: E402
from transferkit import api  # noqa: E402
from transferkit.data.demo import build_demo  # noqa: E402
from transferkit.engine.trainer import StatusCallback  # noqa: E402
from transferkit.tasks.classification.model import build_classifier  # noqa: E402
from transferkit.tasks.classification.spec import ClassificationSpec  # noqa: E402
from transferkit.zoo import get_entry  # noqa: E402

CPU = {"backbone": "mobilenet_v2", "pretrained": True, "batch": 32, "workers": 2, "device": "cpu", "precision": "32"}
MODES = {  # network input px, source image px, train images per class, untimed + timed epochs per run, rounds
    "quick": {"image_size": 128, "source_size": 256, "per_class": 32, "warmup_epochs": 2, "timed_epochs": 1, "rounds": 2,
              **CPU},
    "full": {"image_size": 224, "source_size": 320, "per_class": 16, "warmup_epochs": 2, "timed_epochs": 1, "rounds": 2,
             **CPU},
    # --gpu: ResNet-18 at 224 px with bf16 AMP on one CUDA GPU; random weights (a GPU machine may have no zoo
    # files; speed does not depend on the weights); workers: all cores but two
    "gpu": {"image_size": 224, "source_size": 256, "per_class": 300, "warmup_epochs": 2, "timed_epochs": 2, "rounds": 2,
            "backbone": "resnet18", "pretrained": False, "batch": 128, "workers": max(2, (os.cpu_count() or 4) - 2),
            "device": "cuda", "precision": "bf16-mixed"},
}
LR = 0.01
DEFAULTS = ClassificationSpec().train  # optimiser settings the real path uses (nothing overridden)
AUG = ClassificationSpec().data.augmentation


def build_data(root: Path, mode: dict) -> Path:
    build_demo("digits", root, seed=0, per_class=mode["per_class"], val_per_class=1, size=mode["source_size"])
    for i, path in enumerate(sorted((root / "train").rglob("*.png"))):
        if i % 2 == 0:  # half JPEG, half PNG
            Image.open(path).convert("RGB").save(path.with_suffix(".jpg"), quality=90)
            path.unlink()
    return root


# -- the real path ---------------------------------------------------------------------------------

EPOCH_ENDS: list[tuple[float, float, float]] = []  # (perf_counter, tree CPU s, main-process CPU s) per real epoch end


def observe_real_epoch_ends() -> None:
    """Record the time and the process tree's CPU seconds where the real path stamps each epoch's end in
    status.json (StatusCallback.on_train_epoch_end), right after it. Reads the clock, changes nothing."""
    original = StatusCallback.on_train_epoch_end

    def observed(self, trainer, pl_module):
        original(self, trainer, pl_module)
        EPOCH_ENDS.append((time.perf_counter(), tree_cpu_s(), main_cpu_s()))

    StatusCallback.on_train_epoch_end = observed


# What each variant of the real path adds to the same overrides.
VARIANT_OVERRIDES = {"real_cache": ["data.cache=ram"], "real_bf16": ["train.precision=bf16-mixed"],
                     "real_cache_bf16": ["data.cache=ram", "train.precision=bf16-mixed"],
                     "real_compile": ["train.compile=true"], "real_device_aug": ["data.augment_on=device"]}


def run_real(data: Path, out: Path, mode: dict, epochs: int, extra: list[str] = ()) -> dict:
    overrides = [f"data.train_dir={data / 'train'}", f"data.val_dir={data / 'val'}", f"data.image_size={mode['image_size']}",
                 f"model.backbone={mode['backbone']}", f"model.pretrained={str(mode['pretrained']).lower()}",
                 f"train.epochs={epochs}", f"train.batch_size={mode['batch']}", f"train.num_workers={mode['workers']}",
                 f"train.learning_rate={LR}", f"evaluation.batch_size={mode['batch']}",
                 f"train.accelerator={'gpu' if mode['device'] == 'cuda' else 'cpu'}", f"train.precision={mode['precision']}",
                 *extra]
    EPOCH_ENDS.clear()
    t0 = time.perf_counter()
    metrics = api.train("classification", None, out, overrides, overwrite=True)
    total = time.perf_counter() - t0
    records = [json.loads(line) for line in (out / "status.json").read_text().splitlines()]
    elapsed = [r["elapsed_s"] for r in records]
    steps = [r["step"] for r in records]
    first = mode["warmup_epochs"] - 1  # the timed window starts at the end of the last warm-up epoch
    (w0, c0, m0), (w1, c1, m1) = EPOCH_ENDS[first], EPOCH_ENDS[-1]
    gc.collect()  # let the persistent DataLoader workers of this run go
    return {"epoch_end_s": elapsed, "epoch_s": [round(b - a, 4) for a, b in zip(elapsed, elapsed[1:])],
            "timed_images": (steps[-1] - steps[first]) * mode["batch"], "timed_s": elapsed[-1] - elapsed[first],
            "timed_s_observed": round(w1 - w0, 4), "timed_cpu_s": round(c1 - c0, 3), "timed_cpu_main_s": round(m1 - m0, 3),
            "run_total_s": round(total, 3), "val_acc": metrics["final"].get("val/acc")}


# -- the hand-written loops ------------------------------------------------------------------------

def hand_transforms(size: int, mean, std, train: bool) -> T.Compose:
    tail = [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(mean=list(mean), std=list(std))]
    if not train:
        return T.Compose([T.Resize(int(round(size / 0.875)), antialias=True), T.CenterCrop(size), *tail])
    return T.Compose([T.RandomResizedCrop(size, scale=tuple(AUG.random_resized_crop_scale), antialias=True),
                      T.RandomHorizontalFlip(AUG.horizontal_flip),
                      T.ColorJitter(AUG.color_jitter, AUG.color_jitter, AUG.color_jitter, AUG.hue), *tail])


def run_hand(data: Path, mode: dict, epochs: int, channels_last: bool) -> dict:
    torch.manual_seed(DEFAULTS.seed)
    entry = get_entry(mode["backbone"])
    size, batch, workers, device = mode["image_size"], mode["batch"], mode["workers"], torch.device(mode["device"])
    amp = torch.bfloat16 if mode["precision"] == "bf16-mixed" else None
    torch.backends.cudnn.benchmark = device.type == "cuda"  # as the real path's Trainer sets it on a GPU
    train_set = datasets.ImageFolder(str(data / "train"), hand_transforms(size, entry.mean, entry.std, True))
    val_set = datasets.ImageFolder(str(data / "val"), hand_transforms(size, entry.mean, entry.std, False))
    pin = device.type == "cuda"
    train_loader = DataLoader(train_set, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                              persistent_workers=workers > 0, pin_memory=pin)
    val_loader = DataLoader(val_set, batch_size=batch, num_workers=workers, persistent_workers=workers > 0, pin_memory=pin)
    net, _ = build_classifier(mode["backbone"], train_set.classes, mode["pretrained"], 0.2)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(device=device, memory_format=layout)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD([{"params": [p for p in params if p.ndim > 1], "weight_decay": DEFAULTS.weight_decay},
                           {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}],
                          lr=LR, momentum=DEFAULTS.momentum, nesterov=True)
    total_steps = epochs * len(train_loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / total_steps))))
    ends, images, cpu, main = [], [], [], []
    start = time.perf_counter()
    for _ in range(epochs):
        net.train()
        seen = 0
        for x, y in train_loader:
            x = x.to(device, non_blocking=pin).contiguous(memory_format=layout)
            y = y.to(device, non_blocking=pin)
            with torch.autocast(device_type=device.type, dtype=amp, enabled=amp is not None):
                loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(y)
        net.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val_loader:
                x = x.to(device, non_blocking=pin).contiguous(memory_format=layout)
                with torch.autocast(device_type=device.type, dtype=amp, enabled=amp is not None):
                    correct += int((net(x).argmax(1) == y.to(device)).sum())
        ends.append(time.perf_counter() - start)
        cpu.append(tree_cpu_s())
        main.append(main_cpu_s())
        images.append(seen)
    del train_loader, val_loader
    gc.collect()
    first = mode["warmup_epochs"] - 1
    return {"epoch_end_s": [round(e, 4) for e in ends], "epoch_s": [round(b - a, 4) for a, b in zip(ends, ends[1:])],
            "timed_images": sum(images[first + 1:]), "timed_s": ends[-1] - ends[first],
            "timed_cpu_s": round(cpu[-1] - cpu[first], 3), "timed_cpu_main_s": round(main[-1] - main[first], 3),
            "val_acc": correct / len(val_set)}


# -- driver ----------------------------------------------------------------------------------------

def main_cpu_s() -> float:
    """CPU seconds of this process alone (all its threads, not the DataLoader workers)."""
    t = os.times()
    return t.user + t.system


VARIANT_ENV = {"real_untuned": {"TKIT_MALLOC_TUNING": "0"}}  # the real path with glibc malloc left alone


def run_variant(variant: str, data: Path, out: Path, mode: dict, epochs: int) -> dict:
    """One run, in this process (called in the child that measure() starts)."""
    if variant.startswith("real"):
        observe_real_epoch_ends()
        return run_real(data, out, mode, epochs, VARIANT_OVERRIDES.get(variant, []))
    return run_hand(data, mode, epochs, channels_last=variant == "hand")


def measure(name: str, data: Path, out: Path, mode: dict, epochs: int) -> dict:
    """Run one variant in a fresh Python process and return its numbers.

    A fresh process per run: nothing one run leaves behind (allocator state, oneDNN's primitive cache,
    glibc malloc settings the real path applies to its process) reaches the next."""
    before = cpu_snapshot()
    cmd = [sys.executable, __file__, "--one", name, "--data", str(data), "--out", str(out),
           "--mode-json", json.dumps(mode), "--epochs", str(epochs)]
    proc = subprocess.run(cmd, env={**os.environ, **VARIANT_ENV.get(name, {})}, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{name} run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["others_cpu_share"] = others_cpu_share(before, cpu_snapshot())
    result["images_per_s"] = round(result["timed_images"] / result["timed_s"], 3)
    result["cpu_ms_per_image"] = round(1000 * result["timed_cpu_s"] / result["timed_images"], 2)
    result["main_cpu_ms_per_image"] = round(1000 * result["timed_cpu_main_s"] / result["timed_images"], 2)
    result["timed_s"] = round(result["timed_s"], 4)
    print(f"  {name:<12} {result['images_per_s']:7.2f} images/s, {result['cpu_ms_per_image']:6.1f} CPU ms/image "
          f"({result['main_cpu_ms_per_image']:.1f} in the main process) "
          f"(epochs {result['epoch_s']} s; whole run {result.get('run_total_s', '?')} s incl. set-up and any "
          f"compile; {busy_note(result['others_cpu_share'])})", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small images, fewer rounds (1-2 minutes)")
    parser.add_argument("--gpu", action="store_true", help="ResNet-18, 224 px, bf16 AMP on a CUDA GPU (3,000 images)")
    parser.add_argument("--rounds", type=int, help="override the mode's number of rounds")
    parser.add_argument("--per-class", type=int, help="override the mode's training images per class (epoch size)")
    parser.add_argument("--source-size", type=int,
                        help="override the mode's source image size in px (e.g. 1024: camera-sized files, slow to decode)")
    parser.add_argument("--timed-epochs", type=int, help="override the mode's timed epochs per run")
    parser.add_argument("--no-naive", action="store_true", help="skip the NCHW loop (it is the slowest)")
    parser.add_argument("--untuned", action="store_true",
                        help="also run the real path with TKIT_MALLOC_TUNING=0 (what the allocator setting buys)")
    parser.add_argument("--cache", action="store_true", help="also the real path with data.cache=ram")
    parser.add_argument("--device-aug", action="store_true",
                        help="also the real path with data.augment_on=device (augmentation batched on the device)")
    parser.add_argument("--bf16", action="store_true", help="also the real path with train.precision=bf16-mixed")
    parser.add_argument("--compile", action="store_true", help="also the real path with train.compile=true")
    parser.add_argument("--name", default="train_throughput", help="results file name (benchmarks/results/NAME.json)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child process: run this one variant, print RESULT json
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--mode-json", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        result = run_variant(args.one, Path(args.data), Path(args.out), json.loads(args.mode_json), args.epochs)
        print("RESULT " + json.dumps(result), flush=True)
        return
    mode_name = "gpu" if args.gpu else "quick" if args.quick else "full"
    mode = dict(MODES[mode_name])
    if args.rounds:
        mode["rounds"] = args.rounds
    for key in ("per_class", "source_size", "timed_epochs"):
        if getattr(args, key):
            mode[key] = getattr(args, key)
    epochs = mode["warmup_epochs"] + mode["timed_epochs"]
    print(f"{mode_name} mode: {mode}, {epochs} epochs per run "
          f"(the first {mode['warmup_epochs']} untimed), each run in a fresh process; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads"
          + (f", {torch.cuda.get_device_name(0)}" if mode["device"] == "cuda" else ""), flush=True)
    variants = ["real", "hand"] + ([] if args.no_naive else ["naive"]) + (["real_untuned"] if args.untuned else [])
    variants += (["real_cache"] if args.cache else []) + (["real_bf16"] if args.bf16 else []) + (
        ["real_cache_bf16"] if args.cache and args.bf16 else []) + (["real_compile"] if args.compile else []) + (
        ["real_device_aug"] if args.device_aug else [])
    raw: dict[str, list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="tkit-bench-train-") as tmp:
        data = build_data(Path(tmp) / "data", mode)
        for r in range(mode["rounds"]):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            print(f"round {r + 1}/{mode['rounds']}", flush=True)
            for v in order:
                raw[v].append(measure(v, data, Path(tmp) / "run", mode, epochs))
    summary = summarise(raw, variants, mode)
    path = write_results(args.name, {
        "mode": mode_name, "settings": {**mode, "epochs_per_run": epochs, "learning_rate": LR},
        "what_is_timed": "steady-state epochs (after warmup_epochs untimed ones); an epoch ends after its validation pass",
        **summary, "runs": raw,
    })
    print(f"wrote {path}")
    if "real/naive" in summary["ratio_median"]:
        print(f"ratio vs naive NCHW loop: {summary['ratio_median']['real/naive']:.3f}")
    print(f"ratio: {summary['ratio_median']['real/hand']:.3f}")


def summarise(raw: dict[str, list[dict]], variants: list[str], mode: dict) -> dict:
    """Print the table and the per-round ratios; return them for the results file."""
    ips = {v: [m["images_per_s"] for m in raw[v]] for v in variants}
    cpu = {v: [m["cpu_ms_per_image"] for m in raw[v]] for v in variants}
    # images/s ratio per round (both numbers from the same round), and the same for CPU work per image
    ratios = {f"real/{v}": [round(a / b, 4) for a, b in zip(ips["real"], ips[v])] for v in variants if v != "real"}
    cpu_ratios = {f"real/{v}": [round(b / a, 4) for a, b in zip(cpu["real"], cpu[v])] for v in variants if v != "real"}
    median_ips = {v: statistics.median(x) for v, x in ips.items()}
    median_ratio = {k: round(statistics.median(x), 4) for k, x in ratios.items()}
    median_cpu_ratio = {k: round(statistics.median(x), 4) for k, x in cpu_ratios.items()}
    shares = [m["others_cpu_share"] for v in variants for m in raw[v]]
    quiet = [i for i in range(len(ips["real"])) if max(raw[v][i]["others_cpu_share"] for v in variants) <= 0.1]
    macs = forward_macs(mode["backbone"], mode["image_size"])
    gflops = {v: round(6 * macs * x / 1e9, 2) for v, x in median_ips.items()}  # fwd + 2x fwd for backward, 2 FLOP/MAC
    labels = {"real": "tkit classification train (api.train)", "hand": "hand loop, channels_last",
              "naive": "hand loop, NCHW (naive)", "real_untuned": "tkit ... train, TKIT_MALLOC_TUNING=0",
              "real_cache": "tkit ... train, data.cache=ram", "real_bf16": "tkit ... train, bf16-mixed",
              "real_cache_bf16": "tkit ... train, data.cache=ram + bf16-mixed",
              "real_compile": "tkit ... train, train.compile=true",
              "real_device_aug": "tkit ... train, data.augment_on=device"}
    print()
    print(f"| path | images/s (median of {len(ips['real'])}) | per round | CPU ms/image (main + workers) "
          f"| est. GFLOP/s | others' CPU share per run |")
    print("|---|---|---|---|---|---|")
    for v in variants:
        per_round = ", ".join(f"{x:.2f}" for x in ips[v])
        busy = ", ".join(f"{m['others_cpu_share']:.2f}" for m in raw[v])
        print(f"| {labels[v]} | {median_ips[v]:.2f} | {per_round} | {statistics.median(cpu[v]):.1f} | {gflops[v]:.1f} | {busy} |")
    print(f"(GFLOP/s estimated as 6 x {macs / 1e6:.0f} M forward MACs per image x images/s)")
    for k, x in ratios.items():
        print(f"{k} images/s: median {median_ratio[k]:.3f} (per round {', '.join(f'{v:.3f}' for v in x)}); "
              f"CPU work per image, {k.split('/')[1]}/real: median {median_cpu_ratio[k]:.3f} "
              f"(per round {', '.join(f'{v:.3f}' for v in cpu_ratios[k])})")
    speedups = {f"{v}/real": [round(b / a, 4) for a, b in zip(ips["real"], ips[v])]
                for v in variants if v.startswith("real_")}
    for k, x in speedups.items():
        print(f"{k} images/s (the speed-up of that setting): median {statistics.median(x):.3f} "
              f"(per round {', '.join(f'{v:.3f}' for v in x)})")
    if quiet and len(quiet) < len(ips["real"]):
        for k, x in ratios.items():
            print(f"{k} images/s in the {len(quiet)} round(s) where no run saw others use > 10% of the CPU: "
                  f"median {statistics.median([x[i] for i in quiet]):.3f}")
    print(busy_note(max(shares)) + " (worst run)")
    return {"images_per_s_median": median_ips, "ratio_median": median_ratio, "ratios_per_round": ratios,
            "setting_speedups_per_round": speedups,
            "cpu_work_ratio_median": median_cpu_ratio, "cpu_work_ratios_per_round": cpu_ratios,
            "quiet_rounds": quiet, "forward_macs_per_image": macs, "est_gflops_median": gflops,
            "max_others_cpu_share": max(shares)}


def forward_macs(backbone: str, size: int) -> int:
    from transferkit.optimize import count_macs

    net, _ = build_classifier(backbone, [str(i) for i in range(10)], False, 0.2)
    return count_macs(net.eval(), torch.zeros(1, 3, size, size))


if __name__ == "__main__":
    sys.exit(main())
