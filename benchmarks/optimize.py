"""Prune -> retrain -> ONNX FP32 -> ONNX INT8 on the built-in `digits` demo, measured in one run.

    python benchmarks/optimize.py --quick          # ~50 s idle: 64 px images, 4 + 8 epochs (a smoke run; optimize_quick.json)
    python benchmarks/optimize.py                  # full mode, ~2.5 min on an idle 2-core CPU: 96 px, 10 + 40 epochs
    python benchmarks/optimize.py --out runs/bench --threshold 0.8   # instead of the default --ratio 0.5
    python benchmarks/optimize.py --out runs/bench --reuse           # re-time that run's models only
    OMP_NUM_THREADS=1 python benchmarks/optimize.py --threads 1      # on a machine others are using (see --threads)

Every step is the public API (`api.train / prune / evaluate / export`). Prints one table (params, MACs,
CPU latency at batch 1 and 32, file size, val top-1 per model: unpruned and pruned, each in eager PyTorch,
ONNX Runtime FP32 and ONNX Runtime INT8; timed in a fresh process), the ratios, whether the issue's targets are met, and where
ONNX Runtime spends a batch-1 call by kind of operator (its own profiler, FP32 against INT8), which names
the operators that keep INT8 from paying; writes benchmarks/results/optimize.json with machine info and
every raw timing. Run by hand; the tests never run it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402

from common import cpu_snapshot, machine_info, others_cpu_share, write_results  # noqa: E402
from transferkit import api  # noqa: E402
from transferkit.data.demo import build_demo  # noqa: E402
from transferkit.optimize import OnnxModel, count_macs, count_params, measure_latency_ms, onnx_op_profile  # noqa: E402
from transferkit.tasks import get_task  # noqa: E402

TASK = "classification"
REPORTS = ("prune/prune_report.json", "export/export_report.json")  # what --reuse reads from an earlier --out
MODES = {  # image size, epochs to train / retrain, timing rounds, timed runs per model and round at batch 1 / 32, warm-up
    "quick": {"image_size": 64, "epochs": 4, "retrain_epochs": 8, "rounds": 3, "runs_b1": 10, "runs_b32": 2, "warmup": 2},
    "full": {"image_size": 96, "epochs": 10, "retrain_epochs": 40, "rounds": 5, "runs_b1": 20, "runs_b32": 4, "warmup": 3},
}
# (key, label, runtime, checkpoint whose nn.Module gives params/MACs); `measure` maps keys to files
ROWS = [("unpruned", "unpruned (eager)", "pytorch", "unpruned"),
        ("onnx_fp32_unpruned", "unpruned, ONNX Runtime FP32", "onnx", "unpruned"),
        ("onnx_int8_unpruned", "unpruned, ONNX Runtime INT8", "onnx", "unpruned"),
        ("pruned", "pruned, not retrained (eager)", "pytorch", "pruned"),
        ("retrained", "pruned + retrained (eager)", "pytorch", "retrained"),
        ("onnx_fp32", "pruned, ONNX Runtime FP32", "onnx", "retrained"),
        ("onnx_int8", "pruned, ONNX Runtime INT8", "onnx", "retrained")]
# what each row's ratios compare against
BASELINE = {"onnx_fp32_unpruned": "unpruned", "onnx_int8_unpruned": "onnx_fp32_unpruned", "onnx_fp32": "onnx_fp32_unpruned",
            "onnx_int8": "onnx_fp32"}


def round_timings(predictors: dict, size: int, batch: int, rounds: int, runs: int, warmup: int) -> dict[str, list[float]]:
    """Raw wall times (ms) of single calls. Each round times every model in turn, `warmup` untimed calls and
    then `runs` timed ones, so a burst of load from other processes is spread over the models. (Alternating
    models call by call would not do: ONNX Runtime's worker threads keep spinning after a call and slow the
    next PyTorch call several-fold.)"""
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    raw = {key: [] for key in predictors}
    for _ in range(rounds):
        for key, predictor in predictors.items():
            measure_latency_ms(predictor, x, warmup=warmup, runs=1)
            raw[key] += [round(measure_latency_ms(predictor, x, warmup=0, runs=1), 4) for _ in range(runs)]
    return raw


def early_convs(checkpoint: Path, stages: int) -> list[str]:
    """Names of the conv layers in the backbone's first `stages` stages (for prune.excluded_layers)."""
    net = api.load_predictor(get_task(TASK), checkpoint).net
    return [f"backbone.stages.{i}.{name}" for i in range(stages)
            for name, m in net.backbone.stages[i].named_modules() if isinstance(m, torch.nn.Conv2d)]


def run_pipeline(root: Path, mode: dict, prune_override: str, keep_stages: int, log,
                 distill: bool = True) -> tuple[dict, dict, dict, list]:
    data = root / "data"
    build_demo("digits", data, seed=0)
    common = [f"data.train_dir={data / 'train'}", f"data.val_dir={data / 'val'}", f"data.image_size={mode['image_size']}",
              "model.backbone=mobilenet_v2", "model.pretrained=true", f"train.epochs={mode['epochs']}",
              "train.batch_size=32", "train.optimizer=sgd", "train.learning_rate=0.02", "train.num_workers=2",
              "train.histograms=false"]
    steps = {}

    def step(name, fn, *args, **kwargs):
        log(f"-- {name}")
        t0 = time.perf_counter()
        out = fn(TASK, None, root / name, common + list(args), **kwargs)
        steps[name] = round(time.perf_counter() - t0, 1)
        return out

    step("train", api.train, overwrite=True)
    excluded = early_convs(root / "train" / "best.ckpt", keep_stages)
    prune_report = step("prune", api.prune, prune_override, f"prune.excluded_layers=[{','.join(excluded)}]",
                        model=root / "train" / "best.ckpt")
    step("retrain", api.train, f"model.pruned={root / 'prune' / 'pruned.ckpt'}", f"train.epochs={mode['retrain_epochs']}",
         *(["distill.teacher=auto"] if distill else []), overwrite=True)
    export_report = step("export", api.export, "export.int8=true", model=root / "retrain" / "best.ckpt")
    step("export_unpruned", api.export, "export.int8=true", model=root / "train" / "best.ckpt")
    return prune_report, export_report, steps, excluded


def measure(root: Path, mode: dict, log, threads: int | None = None) -> tuple[dict, dict]:
    files = {"unpruned": root / "train" / "best.ckpt", "pruned": root / "prune" / "pruned.ckpt",
             "retrained": root / "retrain" / "best.ckpt", "onnx_fp32": root / "export" / "model.onnx",
             "onnx_int8": root / "export" / "model_int8.onnx", "onnx_fp32_unpruned": root / "export_unpruned" / "model.onnx",
             "onnx_int8_unpruned": root / "export_unpruned" / "model_int8.onnx"}
    data = [f"data.train_dir={root / 'data' / 'train'}", f"data.val_dir={root / 'data' / 'val'}"]
    size = mode["image_size"]
    example = torch.randn(1, 3, size, size)
    rows, predictors = {}, {}
    for key, label, runtime, net_key in ROWS:
        log(f"-- evaluating {label}")
        predictors[key] = api.load_predictor(get_task(TASK), files[key])
        if threads and runtime == "onnx":  # the same file in a session with that many intra-op threads
            session = OnnxModel(files[key], threads=threads)
            predictors[key] = lambda x, session=session: session(x.numpy())
        net = api.load_predictor(get_task(TASK), files[net_key]).net.eval()
        with torch.inference_mode():
            params, macs = count_params(net), count_macs(net, example)
        metrics = api.evaluate(TASK, None, root / f"eval_{key}", data, model=files[key])
        rows[key] = {"label": label, "runtime": runtime, "file": str(files[key]), "file_bytes": files[key].stat().st_size,
                     "params": params, "macs": macs, "params_macs_from": net_key,
                     "top1": metrics["top1"], "val_images": metrics["num_images"], "raw_latency_ms": {}}
    before, load = cpu_snapshot(), {"loadavg_before_timing": os.getloadavg()}
    for b in (1, 32):
        log(f"-- timing batch {b}: {mode['rounds']} rounds of {mode['warmup']} warm-up + {mode[f'runs_b{b}']} runs per model")
        raw = round_timings(predictors, size, b, mode["rounds"], mode[f"runs_b{b}"], mode["warmup"])
        for key, times in raw.items():
            rows[key][f"latency_ms_b{b}"] = statistics.median(times)
            rows[key]["raw_latency_ms"][f"b{b}"] = times
    load.update(loadavg_after_timing=os.getloadavg(), other_processes_cpu_share_during_timing=others_cpu_share(before, cpu_snapshot()))
    log("-- ONNX Runtime's per-operator profile at batch 1 (1 thread)")
    x = example.numpy()
    for key in ("onnx_fp32_unpruned", "onnx_int8_unpruned", "onnx_fp32", "onnx_int8"):
        rows[key]["op_profile_b1"] = onnx_op_profile(files[key], x, runs=mode["runs_b1"] * mode["rounds"])
    return rows, load


def ratios(rows: dict) -> dict:
    base = rows["unpruned"]
    out = {}
    for key, r in rows.items():
        vs = BASELINE.get(key, "unpruned")
        ref = rows[vs]
        out[key] = {"vs": vs, "params_x": base["params"] / r["params"],
                    **{f"latency_x_b{b}": ref[f"latency_ms_b{b}"] / r[f"latency_ms_b{b}"] for b in (1, 32)},
                    "top1_delta_points": 100 * (r["top1"] - ref["top1"])}
    return out


def targets(rows: dict, rx: dict) -> list[dict]:
    eager, ort = rows["retrained"], rows["onnx_fp32"]
    checks = [("pruning: >=3x fewer parameters", rx["retrained"]["params_x"], ">=", 3.0, "x"),
              ("retraining: <=1 point top-1 loss vs unpruned", -rx["retrained"]["top1_delta_points"], "<=", 1.0, " pts lost"),
              ("INT8: <=1 point top-1 loss vs ONNX FP32", -rx["onnx_int8"]["top1_delta_points"], "<=", 1.0, " pts lost")]
    for b in (1, 32):
        checks += [(f"pruning: >=2x lower CPU latency, batch {b} (retrained eager vs unpruned eager)",
                    rx["retrained"][f"latency_x_b{b}"], ">=", 2.0, "x"),
                   (f"pruning: >=2x lower CPU latency, batch {b} (ONNX Runtime FP32, pruned vs unpruned)",
                    rx["onnx_fp32"][f"latency_x_b{b}"], ">=", 2.0, "x"),
                   (f"ONNX Runtime FP32 >=2x eager (same pruned model), batch {b}",
                    eager[f"latency_ms_b{b}"] / ort[f"latency_ms_b{b}"], ">=", 2.0, "x"),
                   (f"INT8 >=1.5x over ONNX FP32, batch {b}", rx["onnx_int8"][f"latency_x_b{b}"], ">=", 1.5, "x")]
    return [{"target": name, "value": round(v, 3), "need": f"{op} {need}{unit}",
             "met": bool(v >= need if op == ">=" else v <= need)} for name, v, op, need, unit in checks]


# INT8 operators under the name of the float operator they replace; Q/DQ and the layout changes ONNX
# Runtime adds around its NHWC int8 kernels are counted together as overhead.
_AS_FLOAT = {"QGemm": "Gemm", "QLinearAdd": "Add (residual)", "QLinearMatMul": "MatMul", "QLinearMul": "Mul",
             "QLinearGlobalAveragePool": "GlobalAveragePool", "QuantizeLinear": "Q/DQ + layout",
             "DequantizeLinear": "Q/DQ + layout", "Transpose": "Q/DQ + layout", "ReorderInput": "Q/DQ + layout",
             "ReorderOutput": "Q/DQ + layout", "Add": "Add (residual)"}


def int8_by_operator(rows: dict, suffix: str) -> dict:
    """FP32 against INT8 per operator kind. ONNX Runtime fuses differently in each (BatchNorm, ReLU6 and the
    residual Adds into FP32 convs; QLinearAdd nodes in INT8), so a kind found in one only counts 0 in the other."""
    def grouped(profile: dict) -> dict:
        out: dict[str, list] = {}
        for kind, row in profile.items():
            acc = out.setdefault(_AS_FLOAT.get(kind, kind), [0.0, 0])
            acc[0] += row["ms"]
            acc[1] += row["nodes"]
        return out

    fp32 = grouped(rows[f"onnx_fp32{suffix}"]["op_profile_b1"])
    int8 = grouped(rows[f"onnx_int8{suffix}"]["op_profile_b1"])
    table = []
    for kind in dict.fromkeys([*fp32, *int8]):
        (fp, n_fp), (q, n_q) = fp32.get(kind, [0.0, 0]), int8.get(kind, [0.0, 0])
        table.append((kind, round(fp, 4), round(q, 4), round(fp / q, 3) if fp and q else None, max(n_fp, n_q)))
    return {"rows": table,
            "not_faster": [f"{k} ({fp:.3f} -> {q:.3f} ms, {n} nodes)" for k, fp, q, _, n in table if fp and q >= fp],
            "int8_only": [f"{k} (+{q:.3f} ms, {n} nodes)" for k, fp, q, _, n in table if not fp and q > 0]}


def print_report(result: dict) -> None:
    rows, rx, m = result["rows"], result["ratios"], result["machine"]
    head = f"{'model':34} {'params':>10} {'MMACs':>8} {'b1 ms':>8} {'b32 ms':>8} {'size MB':>8} {'top-1':>7} " \
           f"{'params x':>8} {'b1 x':>6} {'b32 x':>6} {'dtop1':>6}  vs"
    print("\n" + head + "\n" + "-" * len(head))
    for key, r in rows.items():
        q = rx[key]
        print(f"{r['label']:34} {r['params']:>10,} {r['macs'] / 1e6:>8.1f} {r['latency_ms_b1']:>8.2f} {r['latency_ms_b32']:>8.2f} "
              f"{r['file_bytes'] / 1e6:>8.2f} {100 * r['top1']:>6.2f}% {q['params_x']:>7.2f}x {q['latency_x_b1']:>5.2f}x "
              f"{q['latency_x_b32']:>5.2f}x {q['top1_delta_points']:>+6.2f}  {q['vs']}")
    print("(ONNX rows: params/MACs are those of the PyTorch network they were exported from; "
          f"{rows['unpruned']['val_images']} val images, 1 image = {100 / rows['unpruned']['val_images']:.2f} points)")
    print(f"\nprune setting: {result['prune_setting']}; mode {result['mode_name']} {result['mode']}")
    busy = m["other_processes_cpu_share_during_timing"]
    print(f"machine: {m['cpu_model']}, {m['cpu_cores']} cores, torch {m['torch']} (timed with {result['timing_threads']} threads), "
          f"onnxruntime {m['onnxruntime']}; other processes used {100 * busy:.0f}% of the CPU during the timing"
          + (" -- BUSY MACHINE: latencies are noisy" if busy > 0.1 else ""))
    print("\ntargets:")
    for t in result["targets"]:
        print(f"  {'MET    ' if t['met'] else 'NOT MET'}  {t['target']}: {t['value']} (need {t['need']})")
    for model in ("unpruned", "pruned"):
        print(f"\nONNX Runtime at batch 1, {model} model, by operator kind (its profiler, 1 thread, median kernel ms "
              "summed over the nodes):")
        print(f"  {'operator':16} {'FP32 ms':>8} {'INT8 ms':>8} {'INT8 x':>7}  nodes")
        for kind, fp, q, x, nodes in result["int8_by_operator"][model]["rows"]:
            print(f"  {kind:16} {fp:>8.3f} {q:>8.3f} {(f'{x:.2f}x' if x else '-'):>7}  {nodes}")
        slower, extra = result["int8_by_operator"][model]["not_faster"], result["int8_by_operator"][model]["int8_only"]
        print("  INT8 is no faster than FP32 for: " + (", ".join(slower) if slower else "nothing")
              + "; INT8 adds: " + (", ".join(extra) if extra else "nothing"))
    print(f"\nall targets met: {all(t['met'] for t in result['targets'])}; total {result['wall_time_s']:.0f} s; "
          f"wrote {result.get('results_file', 'benchmarks/results/')}")


def measure_in_fresh_process(root: Path, args, log) -> tuple[dict, dict]:
    """measure() in a new Python process, as a user's inference process would run the files. Timed in the process
    that had trained, pruned and exported them, eager batch-1 calls once ran 1.6x slower than the same files timed
    alone (2026-12-01, quick mode: 2.07 vs 1.32 ms); later in-process attempts did not reproduce it."""
    with tempfile.TemporaryDirectory(prefix="tkit-bench-measure-") as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--out", str(root), "--reuse", "--measure-into", str(out)]
        cmd += ["--quick"] * args.quick + ([f"--threads={args.threads}"] if args.threads else [])
        log("-- timing the models in a fresh process")
        subprocess.run(cmd, check=True)
        rows, load = json.loads(out.read_text())
    return rows, load


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1-3 minute run: smaller images, fewer epochs and timing runs")
    ap.add_argument("--out", type=Path, help="working folder (default: a temporary folder, deleted afterwards)")
    how = ap.add_mutually_exclusive_group()
    how.add_argument("--ratio", type=float, default=0.5, help="prune.ratio: fraction of channels removed per group (default 0.5)")
    how.add_argument("--threshold", type=float, help="prune.threshold instead of a ratio")
    ap.add_argument("--keep-stages", type=int, default=0, help="leave the convs of the first N backbone stages unpruned "
                    "(prune.excluded_layers; default 0: prune every stage)")
    ap.add_argument("--reuse", action="store_true", help="skip data/train/prune/retrain/export: re-measure the models "
                    "an earlier run left in --out (e.g. to re-time on a quieter machine)")
    ap.add_argument("--epochs", type=int, help="training epochs (default: by mode)")
    ap.add_argument("--retrain-epochs", type=int, help="retraining epochs of the pruned model (default: by mode)")
    ap.add_argument("--no-distill", action="store_true",
                    help="retrain without distilling from the unpruned model (default: distill.teacher=auto)")
    ap.add_argument("--threads", type=int, help="time with this many PyTorch and ONNX Runtime intra-op threads "
                    "(default: each library's own, the physical cores); 1 is far steadier on a machine others share: "
                    "a 2-thread call waits for whichever of its threads the OS has descheduled")
    ap.add_argument("--measure-into", type=Path, help=argparse.SUPPRESS)  # child process: time the models in --out
    args = ap.parse_args(argv)
    if args.reuse and not args.out:
        ap.error("--reuse needs --out DIR of an earlier run")
    mode_name = "quick" if args.quick else "full"
    mode = {**MODES[mode_name], **{k: v for k, v in (("epochs", args.epochs), ("retrain_epochs", args.retrain_epochs)) if v}}
    prune_override = f"prune.threshold={args.threshold}" if args.threshold is not None else f"prune.ratio={args.ratio}"
    started = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", flush=True)

    with tempfile.TemporaryDirectory(prefix="tkit-bench-") as tmp:
        root = (args.out or Path(tmp)).resolve()
        if args.reuse:
            prune_report, export_report = (json.loads((root / f).read_text()) for f in REPORTS)
            cfg, steps = prune_report["config"], {}
            key = "ratio" if cfg["ratio"] is not None else "threshold"  # api.prune ignores the threshold when a ratio is set
            excluded, prune_override = cfg["excluded_layers"], f"prune.{key}={cfg[key]}"
        else:
            prune_report, export_report, steps, excluded = run_pipeline(root, mode, prune_override, args.keep_stages, log,
                                                                        distill=not args.no_distill)
        if args.measure_into:  # the child process below
            if args.threads:
                torch.set_num_threads(args.threads)
            args.measure_into.write_text(json.dumps(measure(root, mode, log, args.threads)))
            return 0
        rows, load = measure_in_fresh_process(root, args, log)
    rx = ratios(rows)
    result = {"benchmark": "optimize", "mode_name": mode_name, "mode": mode, "command": " ".join(sys.argv),
              "retrain_distilled": not args.no_distill,
              "timing_threads": args.threads or "library defaults",
              "prune_setting": f"{prune_override}, {len(excluded)} convs of the first backbone stages excluded",
              "reused_models": args.reuse,
              "prune_excluded_layers": excluded, "machine": {**machine_info(), **load}, "rows": rows, "ratios": rx,
              "targets": targets(rows, rx), "int8_by_operator": {"unpruned": int8_by_operator(rows, "_unpruned"),
                                                                  "pruned": int8_by_operator(rows, "")},
              "step_wall_time_s": steps,
              "prune_report": {k: v for k, v in prune_report.items() if k != "layers"},
              "pruned_layers": [r for r in prune_report["layers"] if r["kept"] != r["total"]],
              "export_report_runtimes": export_report["runtimes"], "export_parity": export_report["parity"],
              "wall_time_s": round(time.perf_counter() - started, 1)}
    result["results_file"] = str(write_results("optimize_quick" if args.quick else "optimize", result))
    print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
