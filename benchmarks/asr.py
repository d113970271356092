"""speech_to_text: val WER zero-shot, after fine-tuning (whisper, ctc on Whisper's encoder) and from scratch (ctc on
the conv encoder), each at the same wall-time budget; training utterances/s; real-time factor of inference eager vs
ONNX FP32 vs INT8.

    python benchmarks/asr.py --quick          # a smoke run (~5 min idle): 24 train / 8 val utterances, 1 min budgets
    python benchmarks/asr.py                  # full: the demo's 120 / 40 utterances, 10 min per model
    python benchmarks/asr.py --minutes 5 --train 200 --out /tmp/asr   # other settings, keep the files

Data: the `speech` demo (espeak-ng requests with made-up product names; the val voices never speak in train, so val
measures new speakers). Every model is trained through transferkit.api as a user would, with `train.max_minutes` as
the budget (the same for all), a constant learning rate after a one-epoch warm-up, checkpoints picked on val WER, and
scored on val with `api.evaluate` (greedy decoding): corpus-level WER and CER.

1. zero-shot: `-m whisper_tiny_en`, nothing trained.
2. whisper: the encoder-decoder fine-tuned (`model.arch=whisper`, learning rate 1e-4 for the decoder, x0.1 encoder).
3. ctc_whisper: Whisper's pretrained encoder with a new CTC head over the transcripts' characters (`model.arch=ctc`).
4. ctc_conv: the QuartzNet-like conv encoder from random weights (`model.encoder=conv`).
Training utterances/s = training utterances x epochs completed / the fit's wall time (validation included).
Runtimes: `api.export` of the ctc_whisper model with `export.int8=true`, then `api.evaluate` of the checkpoint, the
FP32 and the INT8 file: WER and real-time factor (compute seconds per second of audio, batches of 8).

Timings are wall clock on whatever else the machine runs: the share of the CPU other processes used is printed. No
assertions. Run by hand; tests never run it. Results: benchmarks/results/asr[_quick].json.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from common import busy_note, cpu_snapshot, others_cpu_share, write_results  # noqa: E402

import torch  # noqa: E402

from transferkit import api  # noqa: E402
from transferkit.data.demo import build_demo  # noqa: E402

TASK = "speech_to_text"
MODES = {"quick": {"train": 24, "val": 8, "minutes": 1.0}, "full": {"train": 120, "val": 40, "minutes": 10.0}}
# train.epochs is a ceiling: train.max_minutes plans the epochs that fit after the first one, and since then a
# fractional warm-up would complete too; the one-epoch warm-up and constant rate stay so that the recorded results
# (benchmarks/results/asr.json, measured before re-planning existed) remain comparable.
COMMON = ["train.lr_scheduler=constant", "train.warmup_fraction=0", "train.warmup_epochs=1", "train.histograms=false",
          "train.num_workers=0", "train.epochs=1000",
          "evaluation.batch_size=8"]
MODELS = {
    "whisper": ["model.arch=whisper", "train.learning_rate=1e-4", "train.batch_size=4"],
    "ctc_whisper": ["model.arch=ctc", "model.encoder=whisper_tiny_en", "train.learning_rate=1e-3", "train.batch_size=8"],
    "ctc_conv": ["model.arch=ctc", "model.encoder=conv", "train.learning_rate=3e-3", "train.batch_size=8"],
}


def evaluate(model: str | Path, out: Path, val: Path) -> dict:
    m = api.evaluate(TASK, None, out, [f"data.val_manifest={val}"], model=str(model), overwrite=True)
    return {k: m[k] for k in ("wer", "cer", "real_time_factor", "utterances")}


def train(name: str, run: Path, data: dict, minutes: float) -> dict:
    overrides = [f"data.train_manifest={data['train']}", f"data.val_manifest={data['val']}", *COMMON,
                 *MODELS[name], f"train.max_minutes={minutes}"]
    m = api.train(TASK, None, run, overrides, overwrite=True)
    seconds = m["wall_time_s"]
    return {"epochs": m["epochs_completed"], "wall_time_s": seconds, "best_val_wer_in_training": m["best"].get("val/wer"),
            "train_utterances_per_s": round(m["train_utterances"] * max(1, m["epochs_completed"]) / seconds, 2),
            "overrides": overrides}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: few utterances, 1-minute budgets")
    ap.add_argument("--out", type=Path, help="working folder to keep (default: a temporary folder, deleted)")
    ap.add_argument("--train", type=int, help="training utterances of the demo")
    ap.add_argument("--val", type=int, help="val utterances of the demo")
    ap.add_argument("--minutes", type=float, help="training budget per model (train.max_minutes)")
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    args = ap.parse_args(argv)
    mode_name = "quick" if args.quick else "full"
    mode = dict(MODES[mode_name])
    for key in ("train", "val", "minutes"):
        if getattr(args, key) is not None:
            mode[key] = getattr(args, key)
    started, before = time.perf_counter(), cpu_snapshot()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", flush=True)

    result: dict = {"mode": mode_name, **mode, "torch_threads": torch.get_num_threads(),
                    "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "models": {}}
    with tempfile.TemporaryDirectory(prefix="tkit-bench-asr-") as tmp:
        root = (args.out or Path(tmp)).resolve()
        demo = build_demo("speech", root / "demo", train=mode["train"], val=mode["val"], long=2)
        data = {split: root / "demo" / f"{split}.json" for split in ("train", "val")}
        result["demo"] = {"voices": demo.get("voices"), "seconds": demo.get("seconds")}
        log(f"demo: {mode['train']} train / {mode['val']} val utterances, {demo.get('seconds')}")
        result["zero_shot"] = evaluate("whisper_tiny_en", root / "zero_shot", data["val"])
        log(f"zero-shot whisper_tiny_en: {result['zero_shot']}")
        for name in args.models:
            run = root / name
            row = train(name, run, data, mode["minutes"])
            row["val"] = evaluate(run / "best.ckpt", root / f"{name}_eval", data["val"])
            result["models"][name] = row
            log(f"{name}: {row['val']} after {row['epochs']} epochs, {row['train_utterances_per_s']} utterances/s")
        runtime_model = "ctc_whisper" if "ctc_whisper" in args.models else next(iter(args.models), None)
        if runtime_model:
            ex = root / "export"
            report = api.export(TASK, None, ex, [f"data.val_manifest={data['val']}", "export.int8=true"],
                                model=str(root / runtime_model / "best.ckpt"), overwrite=True)
            runtimes = {"eager": root / runtime_model / "best.ckpt", "onnx_fp32": ex / "model.onnx",
                        "onnx_int8": ex / "model_int8.onnx"}
            result["runtimes"] = {"model": runtime_model, "parity": report["parity"],
                                  **{k: {**evaluate(p, root / f"rt_{k}", data["val"]), "file_mb": round(
                                      p.stat().st_size / 1e6, 2)} for k, p in runtimes.items()}}
            log(f"runtimes: {result['runtimes']}")
    result["others_cpu_share"] = others_cpu_share(before, cpu_snapshot())
    result["wall_time_s"] = round(time.perf_counter() - started, 1)
    path = write_results(f"asr{'_quick' if args.quick else ''}", result)
    print(f"\nval WER (new voices), {mode['minutes']:g} min of training each:")
    print(f"  {'zero-shot whisper_tiny_en':28s} WER {result['zero_shot']['wer']:.3f}  CER {result['zero_shot']['cer']:.3f}")
    for name, row in result["models"].items():
        print(f"  {name:28s} WER {row['val']['wer']:.3f}  CER {row['val']['cer']:.3f}  ({row['epochs']} epochs, "
              f"{row['train_utterances_per_s']} train utterances/s)")
    for k, row in result.get("runtimes", {}).items():
        if isinstance(row, dict) and "wer" in row:
            print(f"  runtime {k:10s} WER {row['wer']:.3f}  real-time factor {row['real_time_factor']:.4f}  "
                  f"{row['file_mb']} MB")
    print(f"total {result['wall_time_s']:.0f} s; {busy_note(result['others_cpu_share'])}\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
