"""How training time per epoch and peak memory grow with the number of images and with the input size.

    python benchmarks/scaling.py --quick          # ~1 min idle: 160/320/640 images, 2 epochs (a smoke run)
    python benchmarks/scaling.py                  # full mode, ~2.5 min on an idle 2-core CPU: 400/800/1600 images, 4 epochs

Classification (ImageNet MobileNetV2, the settings of examples/classification.yaml) on the `digits` demo:
  images axis: x1, x2, x4 training images at 64 px;   size axis: 64, 96, 128 px at x1 images
(the demo images are built at the input size, as a user's would be; val is 10 images, so validation
adds little to an epoch). Each configuration trains in a fresh subprocess (`api.train`), which then
reports its own peak RSS (VmHWM / ru_maxrss of the training process, and the largest DataLoader
worker's ru_maxrss) and the epoch times from status.json. x1 at 64 px is run first and again last,
to show how much the machine's load drifted in between.

time per epoch = median of the epochs after the first (the first pays one-off start-up costs).
Printed per configuration: s/epoch, ms per image, its ratio to x1 next to the ratio of images (or of
pixels), peak RSS; then least-squares fits t = a + b*n (n = images, or pixels per image) with the
intercept a (a fixed cost per epoch), R^2 and the largest deviation from the fitted line.
Writes benchmarks/results/scaling.json with machine info and every raw number. Run by hand.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

NAME = "scaling"
MARK = "SCALING_RESULT "
MODES = {  # training images per class at x1, multipliers, input sizes (px), epochs per run
    "quick": {"base_per_class": 16, "multipliers": [1, 2, 4], "sizes": [64, 96, 128], "epochs": 2},
    "full": {"base_per_class": 40, "multipliers": [1, 2, 4], "sizes": [64, 96, 128], "epochs": 4},
}
VAL_PER_CLASS = 1
SETTINGS = ["model.backbone=mobilenet_v2", "model.pretrained=true", "data.augmentation.horizontal_flip=0.0",
            "train.batch_size=32", "train.optimizer=sgd", "train.learning_rate=0.02", "train.warmup_epochs=0",
            "train.num_workers=2", "train.histograms=false"]


# -- the child: one training run in a fresh process ---------------------------------------------------

def _proc_status_kb(key: str) -> int:
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith(key + ":"))
    return int(line.split()[1])


def child(config: dict) -> int:
    from transferkit import api  # imported here: the parent never loads torch

    rss_before_kb = _proc_status_kb("VmRSS")  # after importing transferkit, before any data or model
    t0 = time.perf_counter()
    api.train("classification", None, config["run"], config["overrides"], overwrite=True)
    wall = time.perf_counter() - t0
    records = [json.loads(ln) for ln in (Path(config["run"]) / "status.json").read_text().splitlines() if ln.strip()]
    out = {"train_wall_s": round(wall, 3), "epoch_time_s": [r["epoch_time_s"] for r in records],
           "val_acc": [r.get("val/acc") for r in records], "rss_after_import_kb": rss_before_kb,
           "vmhwm_kb": _proc_status_kb("VmHWM"), "ru_maxrss_self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
           "ru_maxrss_children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}
    print(MARK + json.dumps(out), flush=True)
    return 0


# -- the parent ---------------------------------------------------------------------------------------

def run_config(cfg: dict, root: Path, epochs: int, log) -> dict:
    from common import cpu_snapshot, others_cpu_share

    run = root / f"run_{cfg['key']}"
    overrides = SETTINGS + [f"data.train_dir={cfg['data'] / 'train'}", f"data.val_dir={cfg['data'] / 'val'}",
                            f"data.image_size={cfg['size']}", f"train.epochs={epochs}"]
    log(f"{cfg['key']}: {cfg['images']} images at {cfg['size']} px, {epochs} epochs, fresh subprocess")
    before, t0 = cpu_snapshot(), time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps({"run": str(run), "overrides": overrides})],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall, share = time.perf_counter() - t0, others_cpu_share(before, cpu_snapshot())
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)), None)
    if proc.returncode or line is None:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
        raise SystemExit(f"scaling: configuration {cfg['key']} failed (exit code {proc.returncode})")
    res = json.loads(line[len(MARK):])
    later = res["epoch_time_s"][1:] or res["epoch_time_s"]
    s_epoch = statistics.median(later)
    return {**{k: v for k, v in cfg.items() if k != "data"}, **res, "epochs": epochs, "subprocess_wall_s": round(wall, 2),
            "other_processes_cpu_share": share, "s_per_epoch": s_epoch, "ms_per_image": 1000 * s_epoch / cfg["images"],
            "peak_rss_mb": res["vmhwm_kb"] / 1024, "peak_worker_rss_mb": res["ru_maxrss_children_kb"] / 1024}


def fit(xs: list[float], ys: list[float]) -> dict:
    """Least squares y = a + b*x; R^2; largest |residual| relative to y; intercept as a share of y at the smallest x."""
    n, mx, my = len(xs), statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    a = my - b * mx
    pred = [a + b * x for x in xs]
    ss_res, ss_tot = sum((y - p) ** 2 for y, p in zip(ys, pred)), sum((y - my) ** 2 for y in ys)
    return {"a": a, "b": b, "r2": 1 - ss_res / ss_tot if ss_tot else 1.0, "n_points": n,
            "max_rel_residual": max(abs(y - p) / y for y, p in zip(ys, pred)),
            "intercept_share_at_smallest": a / ys[xs.index(min(xs))]}


def verdict(f: dict) -> str:
    if f["r2"] >= 0.98 and f["max_rel_residual"] <= 0.1:
        shape = "linear"
        if abs(f["intercept_share_at_smallest"]) <= 0.15:
            shape += " and close to proportional"
        elif f["a"] > 0:
            shape += f" with a fixed part ({100 * f['intercept_share_at_smallest']:.0f}% of the smallest configuration)"
        else:
            shape += " (negative intercept: the larger configurations cost more per unit than the smallest)"
        return shape
    return "not clearly linear"


def analyse(rows: list[dict]) -> dict:
    """Ratios vs x1 (the mean of its two runs) on every row; fits of time and peak RSS along each axis. Both x1 runs
    are points of both axes."""
    ref = [r for r in rows if r["axis"] == "base"]
    ref_s = statistics.fmean(r["s_per_epoch"] for r in ref)
    ref_mb = statistics.fmean(r["peak_rss_mb"] for r in ref)
    ref_img, ref_px = ref[0]["images"], ref[0]["size"] ** 2
    for r in rows:
        r["time_ratio_vs_x1"] = r["s_per_epoch"] / ref_s
        r["work_ratio_vs_x1"] = (r["images"] / ref_img) * (r["size"] ** 2 / ref_px)
        r["rss_ratio_vs_x1"] = r["peak_rss_mb"] / ref_mb
    out = {"x1_s_per_epoch_mean": ref_s, "x1_peak_rss_mb_mean": ref_mb,
           "x1_drift": (ref[-1]["s_per_epoch"] - ref[0]["s_per_epoch"]) / ref[0]["s_per_epoch"] if len(ref) > 1 else None}
    for axis, x_of in (("images", lambda r: r["images"]), ("size", lambda r: r["size"] ** 2)):
        pts = ref + [r for r in rows if r["axis"] == axis]
        xs = [x_of(r) for r in pts]
        t, m = fit(xs, [r["s_per_epoch"] for r in pts]), fit(xs, [r["peak_rss_mb"] for r in pts])
        out[axis] = {"x": "training images" if axis == "images" else "pixels per image", "points": [r["key"] for r in pts],
                     "time_fit": t, "time_verdict": verdict(t), "rss_fit": m,
                     "rss_largest_over_smallest": max(r["peak_rss_mb"] for r in pts) / min(r["peak_rss_mb"] for r in pts)}
    return out


def print_report(result: dict) -> None:
    head = (f"{'config':12} {'images':>6} {'px':>4} {'s/epoch':>8} {'ms/img':>7} {'t ratio':>7} {'work ratio':>10} "
            f"{'t/work':>6} {'peak RSS MB':>11} {'RSS ratio':>9} {'worker MB':>9} {'busy':>5}")
    print("\n" + head + "\n" + "-" * len(head))
    for r in result["rows"]:
        print(f"{r['key']:12} {r['images']:>6} {r['size']:>4} {r['s_per_epoch']:>8.2f} {r['ms_per_image']:>7.2f} "
              f"{r['time_ratio_vs_x1']:>6.2f}x {r['work_ratio_vs_x1']:>9.2f}x {r['time_ratio_vs_x1'] / r['work_ratio_vs_x1']:>6.2f} "
              f"{r['peak_rss_mb']:>11.0f} {r['rss_ratio_vs_x1']:>8.2f}x {r['peak_worker_rss_mb']:>9.0f} "
              f"{100 * r['other_processes_cpu_share']:>4.0f}%")
    a = result["analysis"]
    print("(ratios vs the mean of the two x1 runs; work ratio = images x pixels vs x1; t/work 1.00 = proportional; "
          "busy = other processes' CPU share during that run)")
    if a["x1_drift"] is not None:
        print(f"x1 repeated last: {100 * a['x1_drift']:+.0f}% vs the first x1 run (machine drift between runs)")
    for axis in ("images", "size"):
        f, m = a[axis]["time_fit"], a[axis]["rss_fit"]
        unit = (1000 * f["b"], "ms per image") if axis == "images" else (1e4 * f["b"], "s per epoch per 10,000 pixels (100x100) per image")
        print(f"time vs {a[axis]['x']}: t = {f['a']:.2f} s + {unit[0]:.3g} {unit[1]}, R^2 {f['r2']:.3f}, "
              f"worst point {100 * f['max_rel_residual']:.1f}% off: {a[axis]['time_verdict']}")
        per = (1000 * m["b"], "MB per 1000 images") if axis == "images" else (1e4 * m["b"], "MB per 10,000 pixels (100x100) per image")
        print(f"  peak RSS vs {a[axis]['x']}: {m['a']:.0f} MB + {per[0]:.3g} {per[1]}, R^2 {m['r2']:.3f}; "
              f"largest / smallest {a[axis]['rss_largest_over_smallest']:.2f}x")
    m = result["machine"]
    print(f"mode {result['mode_name']} {result['mode']}; machine: {m['cpu_model']}, {m['cpu_cores']} cores, torch {m['torch']}; "
          f"total {result['wall_time_s']:.0f} s; {result['busy_note']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1-2 minute run: fewer images, 2 epochs")
    ap.add_argument("--out", type=Path, help="working folder (default: a temporary folder, deleted afterwards)")
    ap.add_argument("--epochs", type=int, help="epochs per run, at least 2 (default: by mode)")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # internal: one training run, config as JSON
    args = ap.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))

    from common import busy_note, cpu_snapshot, others_cpu_share, write_results
    from transferkit.data.demo import build_demo

    mode_name = "quick" if args.quick else "full"
    mode = {**MODES[mode_name], **({"epochs": args.epochs} if args.epochs else {})}
    if mode["epochs"] < 2:
        ap.error("--epochs must be at least 2 (the first epoch is not timed)")
    started, whole = time.perf_counter(), cpu_snapshot()

    def log(msg):
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", flush=True)

    base, size0 = mode["base_per_class"], mode["sizes"][0]
    with tempfile.TemporaryDirectory(prefix="tkit-bench-scaling-") as tmp:
        root = (args.out or Path(tmp)).resolve()

        def data(per_class: int, size: int) -> Path:
            folder = root / f"data_{per_class}_{size}"
            if not (folder / "demo.json").is_file():
                build_demo("digits", folder, seed=0, per_class=per_class, val_per_class=VAL_PER_CLASS, size=size)
            return folder

        log("building the demo data sets")
        configs = [{"key": "x1 64px", "axis": "base", "images": 10 * base, "size": size0, "data": data(base, size0)}]
        configs += [{"key": f"x{k} {size0}px", "axis": "images", "images": 10 * base * k, "size": size0,
                     "data": data(base * k, size0)} for k in mode["multipliers"][1:]]
        configs += [{"key": f"x1 {s}px", "axis": "size", "images": 10 * base, "size": s, "data": data(base, s)}
                    for s in mode["sizes"][1:]]
        configs += [{**configs[0], "key": "x1 64px again"}]
        rows = [run_config(cfg, root, mode["epochs"], log) for cfg in configs]
    analysis = analyse(rows)
    share = others_cpu_share(whole, cpu_snapshot())
    result = {"mode_name": mode_name, "mode": mode, "command": " ".join(sys.argv), "settings": SETTINGS,
              "val_images": 10 * VAL_PER_CLASS, "rows": rows, "analysis": analysis,
              "other_processes_cpu_share": share, "busy_note": busy_note(share) + " over the whole run",
              "wall_time_s": round(time.perf_counter() - started, 1)}
    path = write_results(NAME, result)
    print_report(json.loads(path.read_text()))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
