"""What every benchmark shares: machine description, CPU-load snapshots, timing, and the results file.

    from common import machine_info, cpu_snapshot, others_cpu_share, median_ms, write_results

Run scripts from the repository root (`python benchmarks/<name>.py`); this folder is on sys.path then.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import onnxruntime  # noqa: E402
import torch  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine_info() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), platform.processor())
    flags = next((ln.split(":", 1)[1].split() for ln in cpuinfo.splitlines() if ln.startswith("flags")), [])
    return {"cpu_model": model, "cpu_cores": os.cpu_count(), "affinity_cores": len(os.sched_getaffinity(0)),
            "cpu_flags_of_note": sorted(f for f in flags if f.startswith(("avx", "fma", "amx")) or "vnni" in f),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(), "python": platform.python_version(),
            "platform": platform.platform(), "ort_providers": onnxruntime.get_available_providers(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def cpu_snapshot() -> tuple[int, int, float]:
    """(all-CPU jiffies, idle jiffies) from /proc/stat and this process's CPU seconds (all its threads)."""
    ticks, own = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]], os.times()
    return sum(ticks), ticks[3] + ticks[4], own.user + own.system + own.children_user + own.children_system


def tree_cpu_s() -> float:
    """CPU seconds used so far by this process (all threads), its live child processes (e.g. DataLoader
    workers, read from /proc) and its children that have already exited. Differences of two readings are
    a measure of work done that depends less on other processes' load than wall time does."""
    own = os.times()
    total = own.user + own.system + own.children_user + own.children_system
    me, tick = os.getpid(), os.sysconf("SC_CLK_TCK")
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                fields = Path(entry.path, "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == me:  # ppid; then utime, stime are fields 14, 15 of the whole line
                total += (int(fields[11]) + int(fields[12])) / tick
    return total


def others_cpu_share(a: tuple, b: tuple) -> float:
    """Fraction of the machine's CPU time that other processes used between two snapshots."""
    total = b[0] - a[0]
    busy, own = total - (b[1] - a[1]), (b[2] - a[2]) * os.sysconf("SC_CLK_TCK")
    return round(max(0.0, busy - own) / max(1, total), 3)


def time_calls(fn: Callable[[], object], runs: int, warmup: int = 2) -> list[float]:
    """Wall times (ms) of `runs` calls of fn() after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(round(1000 * (time.perf_counter() - t0), 4))
    return times


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 2) -> tuple[float, list[float]]:
    """(median ms, raw ms) of fn() over `runs` timed calls after `warmup` untimed ones."""
    raw = time_calls(fn, runs, warmup)
    return statistics.median(raw), raw


def busy_note(share: float) -> str:
    return f"other processes used {100 * share:.0f}% of the CPU" + (" -- BUSY MACHINE: timings are noisy" if share > 0.1 else "")


def write_results(name: str, result: dict) -> Path:
    """benchmarks/results/<name>.json, with the machine description added under "machine" (kept if present)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, **result}
    result["machine"] = {**machine_info(), **result.get("machine", {})}
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)
    return path


def epochs_of(run: Path) -> list[dict]:
    """The per-epoch rows a training run's status.json holds."""
    return [json.loads(line) for line in (run / "status.json").read_text().splitlines()]


def train_for_budget(task: str, spec: Path | None, key: str, overrides: list[str], root: Path, budget_s: float,
                     items: int = 0, item_word: str = "items", metric: str | None = None, probe_epochs: int = 1,
                     log: Callable[[str], None] = lambda text: print(text, flush=True)) -> dict:
    """Train `task` for about `budget_s` seconds: a probe run of `probe_epochs` gives the epoch time (its last
    epoch's, after any warm-up), the real run gets the epochs that fit (train.max_minutes = 1.25 x the budget as a
    safety net). Returns the epochs planned and run, wall time, each epoch's time, and with `items` the training
    `item_word`/s (items x epochs / fit wall time, validation included), with `metric` val/`metric` per epoch."""
    from transferkit import api

    probe = root / f"{key}_probe"
    api.train(task, spec, probe, overrides + [f"train.epochs={probe_epochs}"], overwrite=True)
    epoch_s = epochs_of(probe)[-1]["epoch_time_s"]
    epochs = max(1, int(budget_s // epoch_s))
    log(f"   {key}: {epoch_s:.1f} s per epoch -> {epochs} epochs in {budget_s:.0f} s")
    run = root / key
    started = time.perf_counter()
    api.train(task, spec, run, overrides + [f"train.epochs={epochs}", f"train.max_minutes={budget_s * 1.25 / 60:.3f}"],
              overwrite=True)
    fit_s = time.perf_counter() - started
    done = epochs_of(run)
    row = {"epochs": len(done), "epochs_planned": epochs, "fit_wall_s": round(fit_s, 1), "probe_epoch_s": epoch_s,
           "train_epoch_s": [r["epoch_time_s"] for r in done]}
    if items:
        row[f"train_{item_word}_per_s"] = round(items * len(done) / fit_s, 2)
    if metric:
        row[f"val_{metric}_per_epoch"] = [r.get(f"val/{metric}") for r in done]
    return row
