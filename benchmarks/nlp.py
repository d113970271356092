"""NLP tasks: pretrained MiniLM vs the same architecture from random weights on 50 / 200 / all training sentences;
training sentences/s; eager PyTorch vs ONNX FP32 vs INT8 latency and accuracy; pruned vs unpruned.

    python benchmarks/nlp.py --quick     # ~3 min idle: 50 and 200 sentences, 24 steps per run (a smoke run)
    python benchmarks/nlp.py             # full, ~15 min on an idle 2-core CPU: 50 / 200 / 300 sentences, 144 steps
    python benchmarks/nlp.py --sizes 50 all --steps 96 --prune-ratio 0.25 --out /tmp/nlp   # other settings, keep files

Both tasks, text_classification on the `sentences` demo (support tickets, 5 classes) and token_classification on
the `entities` demo (PER / ORG / LOC / PRODUCT in IOB2), each run through transferkit.api as a user would:

1. Pretrained vs random. `model.backbone=minilm-l6` with `model.pretrained=true` and `=false` (the same BERT
   architecture with random weights), everything else the text defaults (AdamW, head 1e-3, encoder x0.1, linear
   warm-up and decay, batch 16; the random model's word embeddings are trained, the pretrained model's stay
   frozen, as `model.freeze_embeddings` documents). Every run gets the same number of optimiser steps (--steps;
   144 = the defaults' 8 epochs on the 300-sentence set), so a smaller set is seen for more epochs and the two
   inits get an identical budget. "all" is the demo's whole default training set (300 sentences). The training
   sets are separate builds (sentences: per_class = n / 5, n/5 tickets of each class; entities: num_train = n);
   the demo draws val and test before train, so every build has the same val and test files and a smaller
   training set is the first rows of a larger one. Checkpoints are picked on val (the demo's held-out val: 50
   sentences); the figures are measured on a separate test split (200 sentences) with `api.evaluate`: accuracy
   and macro F1 (text classification), entity-level micro F1 / precision / recall, strict IOB2 (token
   classification). The demo splits its names and phrasings between train, val and test, so no test entity
   name occurs in training (checked below and reported as `test_entities_seen_in_train`) and about a third of
   the test tickets use wordings training never shows.
2. Training sentences/s: training sentences x epochs / the fit's wall time (metrics.json `wall_time_s`; the
   per-epoch validation on 50 sentences is included, so the 50-sentence runs, which validate as many sentences
   as they train on, read low: the "all" rows are the throughput figures).
3. Runtimes, for the pretrained model trained on all sentences: `api.export` with `export.int8=true`
   (export_report.json: each runtime's headline metric, batch-1 latency on a 32-token example, file size), then
   `api.evaluate` of each file on test (both metrics of the task) and latency through `api.load_predictor` on
   real tokenised test sentences, each batch padded to its own longest sentence as evaluate does: batch 1 (the
   median over --runs single sentences) and batch 32 (median over repeats of the first 96 test sentences in
   file order, 3 batches).
4. Pruning: `api.prune` (prune.head_ratio = prune.ffn_ratio = --prune-ratio) of that model, `api.evaluate` of
   the pruned checkpoint as it is, then retraining it (`model.pruned=...`, the same --steps on all sentences).
   Reported: parameters (whole network, and the encoder layers that pruning shrinks: the 11.7 M word
   embeddings are never pruned), eager latency at batch 1 and 32 on test sentences, and the metrics before,
   right after pruning, and after retraining.

Timings are wall clock on whatever else the machine runs: the share of the CPU other processes used is
measured and printed. No assertions on speed. Run by hand; tests never run it. Results:
benchmarks/results/nlp[_quick].json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from common import busy_note, cpu_snapshot, others_cpu_share, time_calls, write_results  # noqa: E402

import torch  # noqa: E402

from transferkit import api  # noqa: E402
from transferkit.data.demo import build_demo  # noqa: E402
from transferkit.spec import load_spec  # noqa: E402
from transferkit.tasks import get_task  # noqa: E402

ALL = 300  # the demo's default training set: what "all" means
BATCH = 16  # train.batch_size (the text default)
MODES = {
    "quick": {"sizes": [50, 200], "steps": 24, "num_val": 25, "num_test": 100, "runs": 10, "repeats": 2},
    "full": {"sizes": [50, 200, "all"], "steps": 144, "num_val": 50, "num_test": 200, "runs": 30, "repeats": 5},
}
PRUNE_RATIO = 0.5
INT8_MATMULS = ("MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat")
SETTINGS = ["model.backbone=minilm-l6", f"train.batch_size={BATCH}", "train.histograms=false", "train.num_workers=0"]
INITS = {"pretrained": "model.pretrained=true", "random": "model.pretrained=false"}
TASKS = {
    "text_classification": {"demo": "sentences", "ext": "tsv", "metrics": ("accuracy", "f1_macro"),
                            "label": "text classification (support tickets, 5 classes)"},
    "token_classification": {"demo": "entities", "ext": "txt", "metrics": ("f1", "precision", "recall"),
                             "label": "token classification (PER/ORG/LOC/PRODUCT, entity-level F1)"},
}


def build(task: str, out: Path, n: int, num_val: int, num_test: int) -> dict:
    if TASKS[task]["demo"] == "sentences":  # five classes, class after class: per_class = n / 5
        return build_demo("sentences", out, seed=0, per_class=n // 5, val_per_class=num_val // 5, num_test=num_test)
    return build_demo("entities", out, seed=0, num_train=n, num_val=num_val, num_test=num_test)


def conll_entities(path: Path) -> set[tuple[str, str]]:
    """(type, words) of every IOB2 entity in a CoNLL file."""
    found, words, kind = set(), [], None
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        parts = line.split()
        tag = parts[-1] if parts else "O"
        if kind is not None and not tag.startswith("I-"):
            found.add((kind, " ".join(words)))
            kind = None
        if tag.startswith("B-"):
            kind, words = tag[2:], [parts[0]]
        elif tag.startswith("I-") and kind is not None:
            words.append(parts[0])
    return found


def epochs_for(n: int, steps: int) -> int:
    """Epochs that give at least `steps` optimiser steps (the last partial batch is dropped when n > BATCH)."""
    per_epoch = n // BATCH if n > BATCH else 1
    return max(1, math.ceil(steps / per_epoch))


def metrics_of(task: str, metrics: dict) -> dict:
    return {k: round(float(metrics[k]), 4) for k in TASKS[task]["metrics"]}


def evaluate(task: str, model: Path, out: Path, data: list[str]) -> dict:
    return metrics_of(task, api.evaluate(task, None, out, data, model=model, overwrite=True))


def train(task: str, run: Path, overrides: list[str], n: int, epochs: int) -> dict:
    metrics = api.train(task, None, run, overrides + [f"train.epochs={epochs}"], overwrite=True)
    status = [json.loads(line) for line in (run / "status.json").read_text().splitlines() if line.strip()]
    monitor = get_task(task).monitor
    fit_s = metrics["wall_time_s"]
    return {"train_sentences": metrics["train_sentences"], "epochs": len(status), "steps": metrics["global_step"],
            "fit_wall_s": fit_s, "train_sentences_per_s": round(metrics["train_sentences"] * len(status) / fit_s, 1),
            "best_val": metrics["best"].get(monitor), f"{monitor}_per_epoch": [r.get(monitor) for r in status]}


def real_inputs(task: str, model: Path, test_file: Path, count: int, batch: int) -> list[tuple[torch.Tensor, ...]]:
    """Model inputs of the first `count` test sentences in batches of `batch`, tokenised by the model's own
    tokenizer and padded per batch (the evaluate verb's batches)."""
    t = get_task(task)
    meta = api.load_predictor(t, model).meta
    spec = t.spec_for_model(load_spec(t.spec_class, None, [f"data.val_file={test_file}"]), meta)
    data = t.build_data(spec, meta=meta)
    return [tuple(x) for x in data.calibration_batches(count, batch_size=batch)]


def latency(task: str, model: Path, single: list[tuple], batches: list[tuple], repeats: int) -> dict:
    """Median ms per call at batch 1 (each call another sentence) and at batch 32 (the batches, `repeats` times)."""
    predictor = api.load_predictor(get_task(task), model)
    for inputs in single[:3] + batches[:1]:  # warm-up: first-call allocations, ORT's first run
        predictor(*inputs)
    one = []
    for inputs in single:
        one += time_calls(lambda: predictor(*inputs), runs=1, warmup=0)
    many = []
    for _ in range(repeats):
        for inputs in batches:
            many += time_calls(lambda: predictor(*inputs), runs=1, warmup=0)
    b32 = statistics.median(many)
    return {"batch1_ms": round(statistics.median(one), 2), "batch32_ms": round(b32, 1),
            "batch32_sentences_per_s": round(32 * 1000 / b32, 1)}


def matmuls(path: Path) -> dict | None:
    """For an .onnx file: its float MatMuls and the int8 ones dynamic quantisation made (None for a checkpoint)."""
    if path.suffix != ".onnx":
        return None
    import onnx

    ops = [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node]
    return {"float": ops.count("MatMul"), "int8": sum(ops.count(op) for op in INT8_MATMULS)}


def param_counts(task: str, model: Path) -> dict:
    net = api.load_predictor(get_task(task), model).net
    total = sum(p.numel() for p in net.parameters())
    layers = sum(p.numel() for name, p in net.named_parameters() if ".encoder.layer." in name)
    return {"params": total, "encoder_layer_params": layers}


def bench_task(task: str, root: Path, mode: dict, prune_ratio: float, log) -> dict:
    info = TASKS[task]
    ext = info["ext"]
    sizes = {str(s): ALL if s == "all" else int(s) for s in mode["sizes"]}
    largest = max(sizes.values())
    builds = {}
    for label, n in sizes.items():
        builds[n] = build(task, root / f"data_{n}", n, mode["num_val"], mode["num_test"])
    top = root / f"data_{largest}"
    val, test = top / f"val.{ext}", top / f"test.{ext}"
    for n in sizes.values():  # the demo's promise, which every comparison below relies on
        for name in (val.name, test.name):
            if (root / f"data_{n}" / name).read_bytes() != (top / name).read_bytes():
                raise SystemExit(f"demo {info['demo']}: {name} differs between the {n}- and {largest}-sentence builds")
    result: dict = {"label": info["label"], "demo": info["demo"], "val_sentences": mode["num_val"],
                    "test_sentences": mode["num_test"], "test_counts": builds[largest]["counts"]["test"], "runs": []}
    if task == "token_classification":
        seen = conll_entities(top / "test.txt") & conll_entities(top / "train.txt")
        result["test_entities_seen_in_train"] = len(seen)
    else:
        result["test_heldout_phrasings"] = builds[largest]["heldout_phrasings"]["test"]
    test_data = [f"data.val_file={test}"]

    for label, n in sizes.items():
        epochs = epochs_for(n, mode["steps"])
        for init, override in INITS.items():
            log(f"{task}: train {init} on {n} sentences, {epochs} epochs")
            run = root / f"{task}_{n}_{init}"
            row = {"size": label, "init": init, **train(task, run, SETTINGS + [
                override, f"data.train_file={root / f'data_{n}' / f'train.{ext}'}", f"data.val_file={val}"], n, epochs)}
            row.update(evaluate(task, run / "best.ckpt", root / f"eval_{task}_{n}_{init}", test_data))
            result["runs"].append(row)
            log(f"   {row}")

    best = root / f"{task}_{largest}_pretrained" / "best.ckpt"
    train_all = f"data.train_file={top / f'train.{ext}'}"
    single = real_inputs(task, best, test, mode["runs"], 1)
    batches = real_inputs(task, best, test, 96, 32)
    result["latency_inputs"] = {"batch1_sentences": len(single),
                                "batch1_mean_tokens": round(statistics.mean(x[0].shape[1] for x in single), 1),
                                "batch32_batches": len(batches),
                                "batch32_padded_lengths": [int(x[0].shape[1]) for x in batches]}

    log(f"{task}: export (FP32 + INT8 dynamic) of the pretrained model trained on {largest} sentences")
    export_dir = root / f"{task}_export"
    report = api.export(task, None, export_dir, SETTINGS + [train_all, f"data.val_file={test}", "export.int8=true"],
                        model=best, overwrite=True)
    headline = get_task(task).headline
    result["export_report"] = {"parity": report["parity"], "runtimes": report["runtimes"]}
    result["runtimes"] = {}
    for name, path in (("pytorch", best), ("onnx_fp32", export_dir / "model.onnx"),
                       ("onnx_int8", export_dir / "model_int8.onnx")):
        log(f"{task}: {name}: evaluate on test, latency at batch 1 and 32")
        exported = report["runtimes"][name]
        result["runtimes"][name] = {
            **evaluate(task, path, root / f"eval_{task}_{name}", test_data), "file_bytes": exported["file_bytes"],
            "matmuls": matmuls(path),
            f"export_report_{headline}": exported[headline],
            "export_report_batch1_ms": exported["latency_ms_batch1"],
            **latency(task, path, single, batches, mode["repeats"])}
        log(f"   {result['runtimes'][name]}")

    log(f"{task}: prune heads and FFN neurons (ratio {prune_ratio}), evaluate, retrain {mode['steps']} steps")
    prune_dir = root / f"{task}_prune"
    preport = api.prune(task, None, prune_dir, [f"prune.head_ratio={prune_ratio}", f"prune.ffn_ratio={prune_ratio}"],
                        model=best, overwrite=True)
    pruned = prune_dir / "pruned.ckpt"
    retrain = root / f"{task}_retrain"
    retrained = train(task, retrain, SETTINGS + ["model.pretrained=true", f"model.pruned={pruned}", train_all,
                                                 f"data.val_file={val}"], largest, epochs_for(largest, mode["steps"]))
    unpruned = result["runtimes"]["pytorch"]
    result["prune"] = {
        "head_ratio": prune_ratio, "ffn_ratio": prune_ratio,
        "prune_report": {k: preport[k] for k in ("params_before", "params_after", "macs_before", "macs_after",
                                                 "latency_ms_before", "latency_ms_after", "file_bytes_before",
                                                 "file_bytes_after")},
        "kept": {row["name"]: f"{row['kept']}/{row['total']}" for row in preport["layers"]},
        "unpruned": {**param_counts(task, best), **metrics_of(task, unpruned),
                     "batch1_ms": unpruned["batch1_ms"], "batch32_ms": unpruned["batch32_ms"]},
        "pruned": {**param_counts(task, pruned),
                   **evaluate(task, pruned, root / f"eval_{task}_pruned", test_data)},
        "retrained": {**param_counts(task, retrain / "best.ckpt"),
                      **evaluate(task, retrain / "best.ckpt", root / f"eval_{task}_retrained", test_data),
                      **{k: v for k, v in latency(task, retrain / "best.ckpt", single, batches, mode["repeats"]).items()
                         if k in ("batch1_ms", "batch32_ms")}, "training": retrained},
    }
    return result


def print_task(task: str, r: dict, steps: int) -> None:
    names = TASKS[task]["metrics"]
    print(f"\n== {r['label']}: {r['val_sentences']} val sentences pick the checkpoint, "
          f"{r['test_sentences']} held-out test sentences score it")
    if "test_entities_seen_in_train" in r:
        print(f"test entities whose words occur as an entity in training: {r['test_entities_seen_in_train']}")
    else:
        print(f"test tickets worded in phrasings training never shows: {r['test_heldout_phrasings']}")
    print(f"{'train sent.':>11} {'init':>10} {'epochs':>6} {'steps':>5} {'fit s':>6} {'sent/s':>6} "
          + " ".join(f"{n:>9}" for n in names))
    for row in r["runs"]:
        print(f"{row['train_sentences']:>11} {row['init']:>10} {row['epochs']:>6} {row['steps']:>5} "
              f"{row['fit_wall_s']:>6.1f} {row['train_sentences_per_s']:>6.1f} "
              + " ".join(f"{row[n]:>9.3f}" for n in names))
    print(f"(every run {steps} optimiser steps of {BATCH}; sent/s = training sentences x epochs / fit wall time, "
          "per-epoch validation included)")
    lat = r["latency_inputs"]
    print(f"\n{'runtime':<10} {'MB':>6} {'b1 ms':>6} {'b32 ms':>7} {'b32 sent/s':>10} "
          + " ".join(f"{n:>9}" for n in names) + f"  {'b1 ms (32-token example)':>24} {'int8/float MatMuls':>18}")
    for name, row in r["runtimes"].items():
        print(f"{name:<10} {row['file_bytes'] / 1e6:>6.1f} {row['batch1_ms']:>6.2f} {row['batch32_ms']:>7.1f} "
              f"{row['batch32_sentences_per_s']:>10.1f} " + " ".join(f"{row[n]:>9.3f}" for n in names)
              + f"  {row['export_report_batch1_ms']:>24.2f} "
              + (f"{row['matmuls']['int8']:>9}/{row['matmuls']['float']:<8}" if row["matmuls"] else f"{'-':>9}"))
    int8 = r["runtimes"]["onnx_int8"]["matmuls"]
    if int8 and not int8["int8"]:
        print("!! the INT8 file has no int8 MatMul: dynamic quantisation changed nothing, its row is FP32 again")
    print(f"(batch 1: median of {lat['batch1_sentences']} test sentences, {lat['batch1_mean_tokens']} tokens on "
          f"average; batch 32: {lat['batch32_batches']} batches padded to {lat['batch32_padded_lengths']} tokens; "
          f"ONNX parity max |diff| {r['export_report']['parity']['max_abs_diff']:.1e})")
    p = r["prune"]
    print(f"\npruned: {p['head_ratio']:.0%} of the heads and {p['ffn_ratio']:.0%} of the FFN neurons of every layer")
    print(f"{'model':<28} {'params M':>8} {'layers M':>8} {'b1 ms':>6} {'b32 ms':>7} " + " ".join(f"{n:>9}" for n in names))
    for key, label in (("unpruned", "unpruned (fine-tuned)"), ("pruned", "pruned, not retrained"),
                       ("retrained", "pruned + retrained")):
        row = p[key]
        b1 = f"{row['batch1_ms']:>6.2f}" if "batch1_ms" in row else f"{'':>6}"
        b32 = f"{row['batch32_ms']:>7.1f}" if "batch32_ms" in row else f"{'':>7}"
        print(f"{label:<28} {row['params'] / 1e6:>8.2f} {row['encoder_layer_params'] / 1e6:>8.2f} {b1} {b32} "
              + " ".join(f"{row[n]:>9.3f}" for n in names))
    pr = p["prune_report"]
    print(f"(prune_report.json, 32-token example at batch 1: {pr['latency_ms_before']:.2f} -> {pr['latency_ms_after']:.2f} "
          f"ms, MACs {pr['macs_before'] / 1e6:.0f} M -> {pr['macs_after'] / 1e6:.0f} M)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run of ~3 minutes: 50 and 200 sentences, 24 steps")
    ap.add_argument("--out", type=Path, help="working folder to keep (default: a temporary folder, deleted)")
    ap.add_argument("--sizes", nargs="+", help="training sentences, numbers (sentences: multiples of 5) or 'all'")
    ap.add_argument("--steps", type=int, help="optimiser steps of every training run (default: by mode)")
    ap.add_argument("--prune-ratio", type=float, default=PRUNE_RATIO,
                    help=f"prune.head_ratio and prune.ffn_ratio (default {PRUNE_RATIO})")
    ap.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    args = ap.parse_args(argv)
    mode_name = "quick" if args.quick else "full"
    mode = dict(MODES[mode_name])
    if args.sizes:
        mode["sizes"] = [s if s == "all" else int(s) for s in args.sizes]
    if args.steps:
        mode["steps"] = args.steps
    started, before = time.perf_counter(), cpu_snapshot()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", flush=True)

    result: dict = {"mode": mode_name, **mode, "all": ALL, "batch_size": BATCH, "prune_ratio": args.prune_ratio,
                    "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "settings": SETTINGS,
                    "torch_threads": torch.get_num_threads(), "tasks": {}}
    with tempfile.TemporaryDirectory(prefix="tkit-bench-nlp-") as tmp:
        root = (args.out or Path(tmp)).resolve()
        root.mkdir(parents=True, exist_ok=True)
        for task in args.tasks:
            task_started = time.perf_counter()
            result["tasks"][task] = bench_task(task, root / task, mode, args.prune_ratio, log)
            result["tasks"][task]["wall_time_s"] = round(time.perf_counter() - task_started, 1)
    result["others_cpu_share"] = others_cpu_share(before, cpu_snapshot())
    result["wall_time_s"] = round(time.perf_counter() - started, 1)
    path = write_results(f"nlp{'_quick' if args.quick else ''}", result)
    for task, r in result["tasks"].items():
        print_task(task, r, mode["steps"])
    m = json.loads(path.read_text())["machine"]
    print(f"\nmode {mode_name}; {m['cpu_model']}, {m['affinity_cores']} cores, torch {m['torch']} "
          f"({result['torch_threads']} threads), onnxruntime {m['onnxruntime']}; total {result['wall_time_s']:.0f} s; "
          f"{busy_note(result['others_cpu_share'])}")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
