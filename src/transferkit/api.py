"""One function per verb, shared by every task. The CLI is a thin layer over these.

    from transferkit import api
    api.train("classification", "spec.yaml", "runs/cls", ["train.epochs=3"])
    api.evaluate("classification", "spec.yaml", "runs/eval", model="runs/cls/best.ckpt")
"""
from __future__ import annotations

import copy
import difflib

import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from .engine.checkpoint import META_KEY, read_checkpoint
from .engine.meta import ModelMeta, as_inputs
from .engine.run import RunFolder, is_rank_zero
from .errors import ModelError, SpecError, TrainingInterrupted
from .io import atomic_torch_save, atomic_write_json, atomic_write_text, atomic_write_with
from .automl.config import spec_schema
from .spec import load_spec, render_default_spec, to_yaml
from .tasks import get_task
from .tasks.base import Predictor

log = logging.getLogger("transferkit")

TRAIN_ARTIFACTS = ("last.ckpt", "best.ckpt", "status.json", "metrics.json", "load_report.json", "tensorboard")
# Lightning's SLURM environment writes hpc_ckpt_N.ckpt when the requeue signal (SIGUSR1) arrives
REQUEUE_CHECKPOINTS = "hpc_ckpt_*.ckpt"


def default_spec(task: str) -> str:
    t = get_task(task)
    return render_default_spec(spec_schema(t), t.default_spec_header())


def _spec(task, spec_path, overrides):
    t = get_task(task)
    return t, load_spec(spec_schema(t), spec_path, overrides or [])


def _write_spec(spec, run: RunFolder) -> None:
    """The verb's first write: the folder now holds its results (RunFolder.claim), starting with spec.yaml."""
    if is_rank_zero():
        run.claim()
        atomic_write_text(run.path / "spec.yaml", to_yaml(spec))


# -- train --------------------------------------------------------------------------------------

def train(task: str, spec_path: str | Path | None, results: str | Path, overrides: Sequence[str] = (),
          *, overwrite: bool = False, log_file: str | Path | None = None, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train a model into `results`; `callbacks` are extra Lightning callbacks (automl's trial reporter)."""
    import lightning.pytorch as pl

    from .engine.trainer import InterruptCheckpoint, build_trainer, compile_network, resolve_accelerator

    t, spec = _spec(task, spec_path, overrides)
    results = Path(results)
    with RunFolder(results, log_file=log_file, task=t.name, verb="train", overwrite=overwrite) as run:
        resume = spec.train.resume
        last = results / "last.ckpt"
        start_from = _requeued_checkpoint(results)
        if start_from is not None:
            log.info("SLURM requeued job %s (restart %s): resuming from %s", os.environ.get("SLURM_JOB_ID", "?"),
                     os.environ.get("SLURM_RESTART_COUNT"), start_from)
            resume = True
        elif resume:
            start_from = last
        replace = False
        if is_rank_zero():
            if resume and not start_from.is_file():
                raise SpecError(f"train.resume=true but {last} does not exist; train without resume first")
            earlier = [a for a in ("last.ckpt", "best.ckpt", "status.json") if (results / a).exists()]
            earlier += [p.name for p in results.glob(REQUEUE_CHECKPOINTS)]
            if not resume and earlier:
                if not overwrite:
                    raise SpecError(f"results folder {results} already holds a training run; pass train.resume=true "
                                    "to continue it, --overwrite to replace it, or another -r DIR")
                replace = True
        pl.seed_everything(spec.train.seed, workers=True, verbose=False)
        data = t.build_data(spec)
        module, report = t.build_training_module(spec, data)
        trainer = build_trainer(spec.train, results, t.monitor, t.monitor_mode, callbacks=list(callbacks),
                                fixed_input_shape=t.fixed_input_shape)
        if spec.train.compile:
            compile_network(module.net, spec.train, resolve_accelerator(spec.train))
        for split in ("train", "val"):  # unusable items found (and a split left empty refused) up front
            data.scan(split)
        if replace:  # only now that the new run's data, model and trainer settings are known to work
            for p in [*(results / name for name in TRAIN_ARTIFACTS), *results.glob(REQUEUE_CHECKPOINTS)]:
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        _write_spec(spec, run)
        if report is not None:
            log.info(report.summary())
            if is_rank_zero() and not resume:
                atomic_write_json(results / "load_report.json", report.as_dict())
        started = time.time()
        try:
            trainer.fit(module, datamodule=data, ckpt_path=str(start_from) if resume else None)
        except SystemExit:  # Lightning ends fit so after Ctrl-C and SIGTERM; InterruptCheckpoint has saved last.ckpt
            stopped = next((cb for cb in trainer.callbacks if isinstance(cb, InterruptCheckpoint) and cb.interrupted),
                           None)
            if stopped is not None:
                how = "interrupted (Ctrl-C)" if stopped.signal == "SIGINT" else f"stopped by {stopped.signal}"
                raise TrainingInterrupted(
                    f"training {how}; a resumable checkpoint is in {last}. Continue with: "
                    f"tkit {task} train -e {spec_path or 'SPEC'} -r {results} train.resume=true",
                    exit_code=128 + signal.Signals[stopped.signal].value) from None
            raise
        except ValueError as e:  # torch's optimizer refuses state saved for other parameter groups
            if resume and "parameter group" in str(e):
                raise SpecError(
                    f"{start_from} holds optimizer state for other parameter groups (written by an earlier "
                    "transferkit, or with another train.backbone_lr_scale / model.freeze_blocks); it cannot be "
                    f"resumed. Start a new run from its weights: model.pretrained={start_from} with another -r DIR"
                ) from None
            raise
        if trainer.world_size > 1:  # every rank says so on its own console: proof that all of them trained
            log.info("rank %d of %d (node %d) trained %d steps", trainer.global_rank, trainer.world_size,
                     trainer.node_rank, trainer.global_step)
        if is_rank_zero():  # the run finished: requeue checkpoints have served their purpose
            for p in results.glob(REQUEUE_CHECKPOINTS):
                p.unlink(missing_ok=True)
        metrics = _final_train_metrics(trainer, module, data, started, t.item_kind)
        if is_rank_zero():
            atomic_write_json(results / "metrics.json", metrics)
            skipped_key = f"skipped_{t.item_kind}"
            if metrics[skipped_key]["count"]:
                log.warning("skipped %d %s(s) that could not be read; each is listed under %s in %s",
                            metrics[skipped_key]["count"], t.item_kind.removesuffix("s"), skipped_key,
                            results / "metrics.json")
            log.info("best %s = %s; checkpoints, logs and TensorBoard events are in %s",
                     t.monitor, metrics.get("best", {}).get(t.monitor), results)
        return metrics


def _requeued_checkpoint(results: Path) -> Path | None:
    """The checkpoint a SLURM job that SLURM requeued continues from; None unless this is such a job.

    SLURM sets SLURM_RESTART_COUNT in a requeued job, which reruns the same command line. Under SLURM's
    `--signal=USR1@SECONDS` convention Lightning saves hpc_ckpt_N.ckpt at the signal and requeues the
    job; the SIGTERM that stops the job then saves last.ckpt. Whichever of them is newer is where the
    run got to."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    if not (restarts.isdigit() and int(restarts) > 0 and SLURMEnvironment.detect()):
        return None
    found = [p for p in [results / "last.ckpt", *results.glob(REQUEUE_CHECKPOINTS)] if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def _final_train_metrics(trainer, module, data, started: float, kind: str) -> dict[str, Any]:
    cb = trainer.checkpoint_callback
    final = {k: (v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v)
             for k, v in trainer.callback_metrics.items() if not k.endswith("_step")}
    best_score = cb.best_model_score.item() if cb is not None and cb.best_model_score is not None else None
    skipped = {**getattr(data, "skipped", {}), **getattr(module, "bad_files", {})}
    return {
        "task": module.meta.task,
        "epochs_completed": trainer.current_epoch,
        "planned_epochs": trainer.max_epochs,  # train.epochs, or the epochs that fit train.max_minutes
        "global_step": trainer.global_step,
        "final": {k.removesuffix("_epoch"): v for k, v in final.items()},
        "best": {cb.monitor: best_score, "checkpoint": str(cb.best_model_path)} if cb is not None else {},
        "classes": list(module.meta.classes),
        **_split_counts(data, kind),
        f"skipped_{kind}": {"count": len(skipped), "files": skipped},
        **({"data_problems": data.problems} if hasattr(data, "problems") else {}),  # detection: label rows/files
        "warnings": list(getattr(data, "warnings", [])),
        "world_size": trainer.world_size,
        "ranks_that_trained": getattr(module, "ranks_seen", None),
        "wall_time_s": round(time.time() - started, 2),
    }


def _split_counts(data, kind: str) -> dict[str, int]:
    """The train_/val_ sizes in metrics.json: the data module's `split_counts()` where it has one (keypoints: images
    and objects), else one count of its items per split."""
    if hasattr(data, "split_counts"):
        return data.split_counts()
    return {f"train_{kind}": len(getattr(data, "train_items", [])), f"val_{kind}": len(getattr(data, "val_items", []))}


def automl(task: str, spec_path, results, overrides: Sequence[str] = (), *, log_file=None,
           overwrite: bool = False) -> dict[str, Any]:
    """Hyper-parameter search (the spec's `automl` section): trials are `train` runs in results/trial_NNNN;
    writes trials.csv, best_spec.yaml, metrics.json and plots. The same call on the same folder resumes."""
    from .automl.study import run_study

    return run_study(task, spec_path, results, list(overrides), log_file=log_file, overwrite=overwrite)


def run_extra_verb(task: str, verb: str, spec_path, results, overrides: Sequence[str] = (), *, model=None,
                   log_file=None, overwrite: bool = False) -> Any:
    """A verb only some tasks have (dataset_convert, kmeans): the task's own function does the work."""
    t, spec = _spec(task, spec_path, overrides)
    if results is None:
        return t.extra_verbs[verb](spec, None, model)
    results = Path(results)
    with RunFolder(results, log_file=log_file, task=t.name, verb=verb, overwrite=overwrite) as run:
        _write_spec(spec, run)
        return t.extra_verbs[verb](spec, results, model)


# -- loading a model for evaluate / inference / prune / export ----------------------------------

def read_onnx_meta(path: Path, export_command: str = "tkit <task> export"):
    """(OnnxModel, ModelMeta) of an exported .onnx file; ModelError when it carries no transferkit metadata."""
    from .optimize.runtime import OnnxModel

    onnx_model = OnnxModel(path)
    raw = onnx_model.metadata.get(META_KEY)
    if raw is None:
        raise ModelError(f"{path} has no transferkit metadata; export it with `{export_command}`, "
                         "or bring your own ONNX with `tkit model import-onnx`")
    try:
        return onnx_model, ModelMeta.from_dict(json.loads(raw), str(path))
    except json.JSONDecodeError:
        raise ModelError(f"{path}: its transferkit metadata is not JSON; re-export the model") from None


def read_model_meta(path: str | Path) -> ModelMeta:
    """The ModelMeta of a checkpoint (.ckpt) or exported .onnx file, whatever its task."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return read_onnx_meta(path)[1]
    return read_checkpoint(path)[0]


def load_predictor(task, model: str | Path | None, device: str = "cpu") -> Predictor:
    if model is None:
        raise SpecError("this verb needs a model: pass -m PATH (a best.ckpt, pruned.ckpt or exported .onnx)")
    path = Path(model)
    if not path.exists():  # a name the task runs as it is (a zoo model, zero-shot), else a missing file below
        named = task.named_model(str(model), device)
        if named is not None:
            return named
        close = difflib.get_close_matches(str(model), task.model_names(), n=1, cutoff=0.6)
        if close:
            raise ModelError(f"-m {model}: no such file, nor a {task.name} model of the zoo; did you mean "
                             f"-m {close[0]}? (or pass a best.ckpt, pruned.ckpt or exported .onnx)")
    if path.suffix.lower() == ".onnx":
        onnx_model, meta = read_onnx_meta(path, f"tkit {task.name} export")
        if meta.task != task.name:
            raise ModelError(f"{path} is a {meta.task} model, not {task.name}")
        if len(onnx_model.input_names) != len(meta.inputs):
            raise ModelError(f"{path} has {len(onnx_model.input_names)} graph inputs but its metadata declares "
                             f"{len(meta.inputs)} ({', '.join(meta.input_names)}); re-export the model")

        def run_onnx(*inputs: torch.Tensor) -> list[torch.Tensor]:
            outputs = onnx_model(*(x.numpy() for x in inputs))
            return [torch.from_numpy(o) for o in outputs]

        return Predictor(meta, run_onnx, "onnx", path)
    meta, state = read_checkpoint(path, task=task.name)
    net = task.load_net(meta, state, path).eval().to(device)
    return eager_predictor(task, meta, net, path, device)


def eager_predictor(task, meta: ModelMeta, net: torch.nn.Module, path: Path, device: str = "cpu") -> Predictor:
    """A Predictor that runs the eager `net` (in eval mode, on `device`) as the task's eager runner does; outputs
    come back on the CPU as a list."""
    forward = task.eager_runner(net, device)

    @torch.inference_mode()
    def run_torch(*inputs: torch.Tensor) -> list[torch.Tensor]:
        out = forward(*inputs)
        out = out if isinstance(out, (list, tuple)) else [out]
        return [o.cpu() for o in out]

    return Predictor(meta, run_torch, "pytorch", path, net=net)


def _model_verb_setup(task, spec_path, overrides, model):
    t, spec = _spec(task, spec_path, overrides)
    predictor = load_predictor(t, model)
    spec = t.spec_for_model(spec, predictor.meta)
    return t, spec, predictor


# -- evaluate / inference -----------------------------------------------------------------------

def evaluate(task: str, spec_path, results, overrides: Sequence[str] = (), *, model=None, log_file=None,
             overwrite: bool = False) -> dict:
    """Score a model (or predictions on disk) on the validation data; `overwrite` lets it write into a
    folder that holds another verb's results (RunFolder)."""
    results = Path(results)
    with RunFolder(results, log_file=log_file, task=get_task(task).name, verb="evaluate", overwrite=overwrite) as run:
        if model is None:  # e.g. detection predictions already on disk
            t, spec = _spec(task, spec_path, overrides)
            metrics = t.evaluate_without_model(spec, results)
            if metrics is None:
                raise SpecError("evaluate needs a model: -m PATH (a best.ckpt, pruned.ckpt or exported .onnx)")
            _write_spec(spec, run)
            atomic_write_json(results / "metrics.json", metrics)
            return metrics
        t, spec, predictor = _model_verb_setup(task, spec_path, overrides, model)
        _write_spec(spec, run)
        data = t.build_data(spec, meta=predictor.meta)
        metrics = t.evaluate(spec, predictor, data, results)
        atomic_write_json(results / "metrics.json", metrics)
        headline = {k: v for k, v in metrics.items() if isinstance(v, float)}
        log.info("evaluated %s (%s): %s", predictor.source, predictor.kind,
                 ", ".join(f"{k}={v:.4f}" for k, v in headline.items()))
        return metrics


def inference(task: str, spec_path, results, overrides: Sequence[str] = (), *, model=None, log_file=None,
              overwrite: bool = False) -> dict:
    """Predict on `inference.images`; `overwrite` as for evaluate."""
    results = Path(results)
    with RunFolder(results, log_file=log_file, task=get_task(task).name, verb="inference", overwrite=overwrite) as run:
        t, spec, predictor = _model_verb_setup(task, spec_path, overrides, model)
        _write_spec(spec, run)
        started = time.perf_counter()
        summary = t.inference(spec, predictor, results)
        timing = predictor.timing(time.perf_counter() - started, summary[t.item_kind])
        summary["throughput"] = timing
        atomic_write_json(results / "inference.json", summary)
        log.info("wrote predictions for %d %s to %s (%d skipped)", summary[t.item_kind], t.item_kind, results,
                 summary[f"skipped_{t.item_kind}"]["count"])
        log.info("throughput: %.1f %s/s end to end (reading, model, writing; %.1f s); model (%s) p50 %.2f ms, "
                 "p95 %.2f ms per call of up to %d, %.0f%% of the time", timing["items_per_s"], t.item_kind,
                 timing["wall_s"], predictor.kind, timing["model_ms_p50"], timing["model_ms_p95"],
                 timing["batch_size_max"], 100 * timing["model_share"])
        return summary


# -- prune ----------------------------------------------------------------------------------------

def _latency(fn, inputs: tuple[torch.Tensor, ...]) -> float:
    """Median ms of `fn(*inputs)`: an eager network or a Predictor, on the task's example inputs."""
    from .optimize import measure_latency_ms

    return round(measure_latency_ms(fn, inputs, warmup=3, runs=10), 3)


def prune(task: str, spec_path, results, overrides: Sequence[str] = (), *, model=None, log_file=None,
          overwrite: bool = False) -> dict:
    """TAO's prune: remove low-norm channel groups, write pruned.ckpt and prune_report.json."""
    from .optimize import count_macs, count_params

    results = Path(results)
    if model is None:
        raise SpecError("prune needs the trained checkpoint: -m runs/cls/best.ckpt")
    with RunFolder(results, log_file=log_file, task=get_task(task).name, verb="prune", overwrite=overwrite) as run:
        t, spec = _spec(task, spec_path, overrides)
        _write_spec(spec, run)
        meta, state = read_checkpoint(model, task=t.name)
        net = t.load_net(meta, state, Path(model)).eval()
        p = spec.prune
        example = t.example_inputs(meta)
        # timed as evaluate/inference/export run it (the task's eager runner: e.g. BatchNorm folded,
        # channels_last), on a copy, so the report compares with export_report.json's "pytorch" row
        with torch.inference_mode():
            before = {"params": count_params(net), "macs": count_macs(net, example),
                      "latency_ms": _latency(t.eager_runner(copy.deepcopy(net), "cpu"), example)}
        result = t.prune_net(net, example, spec)
        recovery = _recalibrate_pruned(t, spec, meta, net, Path(model), results)
        with torch.inference_mode():
            after = {"params": count_params(net), "macs": count_macs(net, example),
                     "latency_ms": _latency(t.eager_runner(copy.deepcopy(net), "cpu"), example)}
        new_meta = meta.with_updates(pruned_shapes=t.pruned_shapes(net),
                                     history={**meta.history, "pruned_from": str(Path(model).resolve()), "prune": p.model_dump(mode="json")})
        out = results / "pruned.ckpt"
        atomic_torch_save({META_KEY: new_meta.to_dict(),
                           "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, out)
        report = {
            "model": str(model), "pruned_checkpoint": str(out), "config": p.model_dump(mode="json"),
            "params_before": before["params"], "params_after": after["params"],
            "macs_before": before["macs"], "macs_after": after["macs"],
            "latency_ms_before": before["latency_ms"], "latency_ms_after": after["latency_ms"],
            "file_bytes_before": Path(model).stat().st_size, "file_bytes_after": out.stat().st_size,
            "params_ratio": round(before["params"] / max(1, after["params"]), 3),
            **recovery,
            "layers": [{"name": r.name, "kept": r.kept, "total": r.total} for r in result.layers],
        }
        atomic_write_json(results / "prune_report.json", report)
        _print_prune_table(report)
        log.info("pruned model: %s (retrain it: tkit %s train ... model.pruned=%s)", out, task, out)
        return report


DEFAULT_BN_RECALIBRATION_BATCHES = 20  # prune.bn_recalibration_batches when the spec leaves it empty


def _recalibrate_pruned(t, spec, meta: ModelMeta, net: torch.nn.Module, model: Path, results: Path) -> dict[str, Any]:
    """After pruning: re-estimate BatchNorm statistics on training images (prune.bn_recalibration_batches) and,
    with prune.evaluate=true, score the val set before and after; what was done, for prune_report.json."""
    from .data.items import usable_batches
    from .errors import TransferkitError
    from .optimize.bn_recal import batchnorm_layers, recalibrate_batchnorm

    p = spec.prune
    wanted = getattr(p, "bn_recalibration_batches", 0)  # a prune section without the key (text) never re-estimates
    evaluate = getattr(p, "evaluate", False)
    count = DEFAULT_BN_RECALIBRATION_BATCHES if wanted is None else wanted
    reason = ""
    if not batchnorm_layers(net):
        count = 0
        reason = "the network has no BatchNorm layers"
    elif count == 0:
        reason = "prune.bn_recalibration_batches=0"
    out: dict[str, Any] = {}
    if not (count or evaluate):
        return {"bn_recalibration": {"done": False, "reason": reason}}
    data_spec = t.spec_for_model(spec, meta)
    try:
        data = t.build_data(data_spec, meta=meta)
        # No scan of the training split (it decodes every image to check it): the few batches drawn below drop
        # a file that does not decode, as every loader does.
        if count and not data.train_items:
            asked = "" if wanted is None else f"={wanted}"
            raise SpecError(f"prune.bn_recalibration_batches{asked} needs training {t.item_kind}: give the "
                            "training data in the spec, or set prune.bn_recalibration_batches=0")
    except TransferkitError as e:
        if wanted is not None or evaluate:
            raise
        log.warning("prune: BatchNorm statistics not re-estimated (the pruned model evaluates poorly until "
                    "retrained): %s", e)
        return {"bn_recalibration": {"done": False, "reason": f"no usable training data: {e}"}}

    def score(name: str) -> float:
        started = time.perf_counter()
        predictor = eager_predictor(t, meta, copy.deepcopy(net), model)  # a copy: the runner may keep a folded one
        value = t.evaluate(data_spec, predictor, data, results / name)[t.headline]
        out["evaluate_seconds"] = round(out.get("evaluate_seconds", 0.0) + time.perf_counter() - started, 2)
        return value

    if evaluate:
        out["val_after_prune"] = {t.headline: score("eval_pruned")}
    if count:
        # A shuffled pass over at most `count` batches of training items, preprocessed as for evaluation: the
        # statistics evaluation will meet (on the demo set the training augmentation made no difference).
        order = torch.randperm(len(data.train_items), generator=torch.Generator().manual_seed(spec.train.seed))
        chosen = [data.train_items[i] for i in order[: count * data.batch_size].tolist()]
        loader = data.loader(chosen, False, data.batch_size)
        batches = (as_inputs(data.model_inputs(b)) for b in usable_batches(loader, data.skipped))
        started = time.perf_counter()
        done = recalibrate_batchnorm(net, batches, count)
        out["bn_recalibration"] = {"done": done.batches > 0, "batches": done.batches, t.item_kind: done.items,
                                   "bn_layers": done.bn_layers, "seconds": round(time.perf_counter() - started, 2)}
        log.info("prune: re-estimated the statistics of %d BatchNorm layers on %d batches (%d training %s)",
                 done.bn_layers, done.batches, done.items, t.item_kind)
        if evaluate:
            out["val_after_recalibration"] = {t.headline: score("eval_recalibrated")}
    else:
        out["bn_recalibration"] = {"done": False, "reason": reason}
    for key in ("val_after_prune", "val_after_recalibration"):
        if key in out:
            log.info("prune: val %s %s = %.4f", t.headline, key.removeprefix("val_").replace("_", " "),
                     out[key][t.headline])
    return out


def _print_prune_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="prune")
    for col in ("", "before", "after", "ratio"):
        table.add_column(col, justify="right")
    for key, label in (("params", "parameters"), ("macs", "MACs"), ("file_bytes", "file bytes"),
                       ("latency_ms", "CPU latency ms (batch 1)")):
        b, a = report[f"{key}_before"], report[f"{key}_after"]
        table.add_row(label, f"{b:,}" if isinstance(b, int) else f"{b:.2f}", f"{a:,}" if isinstance(a, int) else f"{a:.2f}",
                      f"{b / a:.2f}x" if a else "-")
    layers = Table(title="kept / total channels")
    layers.add_column("layer")
    layers.add_column("kept/total", justify="right")
    for row in report["layers"]:
        if row["kept"] != row["total"]:
            layers.add_row(row["name"], f"{row['kept']}/{row['total']}")
    console = Console(stderr=False)
    console.print(table)
    if layers.row_count:
        console.print(layers)


# -- export ---------------------------------------------------------------------------------------

def _float_nodes(onnx_path: Path) -> list[str]:
    """The nodes an INT8 file keeps in float, as its metadata names them."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    return json.loads(props.get("float_nodes", "[]"))


def export(task: str, spec_path, results, overrides: Sequence[str] = (), *, model=None, log_file=None,
           overwrite: bool = False) -> dict:
    """ONNX (FP32, optionally INT8) with parity checked against PyTorch; safetensors weights."""
    from safetensors.torch import save_file

    from .optimize import export_onnx, export_tensorrt, quantize_int8
    from .optimize.quantize import TARGET_FLOAT, quantize_int8_auto

    results = Path(results)
    with RunFolder(results, log_file=log_file, task=get_task(task).name, verb="export", overwrite=overwrite) as run:
        t, spec = _spec(task, spec_path, overrides)
        predictor = load_predictor(t, model)
        if predictor.kind != "pytorch":
            raise SpecError("export needs a PyTorch checkpoint (-m best.ckpt), not an .onnx file")
        spec = t.spec_for_model(spec, predictor.meta)
        _write_spec(spec, run)
        meta = predictor.meta
        net = predictor.net.eval().to(memory_format=torch.contiguous_format)
        graph = t.export_graph(net, meta, spec)
        graph.module.eval()
        onnx_meta = meta.with_updates(pruned_shapes=None, export={**meta.export, **graph.meta})
        metadata = {META_KEY: json.dumps(onnx_meta.to_dict()), "task": meta.task, "class_names": list(meta.classes),
                    **t.onnx_metadata(meta)}
        fp32 = export_onnx(graph.module, results / "model.onnx", meta.inputs, metadata, opset=spec.export.opset,
                           output_names=graph.output_names, output_axes=graph.output_axes)
        data = t.build_data(spec, meta=meta)
        real = next(iter(data.calibration_batches(8, batch_size=8)), None)
        probe = as_inputs(real) if real is not None else t.example_inputs(meta, batch=4)
        parity = t.check_export(spec, net, graph, fp32, probe)
        log.info("ONNX parity on %d %s %s: max |PyTorch - ONNX Runtime| = %.2e (tolerance %.0e)", len(probe[0]),
                 "training" if real is not None else "random", t.item_kind, parity["max_abs_diff"],
                 spec.export.parity_tolerance)
        # cloned: tied weights (a decoder's token embedding and output projection) share memory, which safetensors refuses
        weights = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
        atomic_write_with(results / "model.safetensors",
                          lambda tmp: save_file(weights, tmp, {META_KEY: json.dumps(meta.to_dict())}))
        report: dict[str, Any] = {"model": str(model), "onnx": str(fp32), "parity": parity,
                                  "safetensors": str(results / "model.safetensors"), "runtimes": {},
                                  **t.export_files(meta, results)}
        runtimes = {"pytorch": (predictor, None), "onnx_fp32": (load_predictor(t, fp32), fp32)}
        if spec.export.int8:
            calib = [] if spec.export.int8_target == "dynamic" else [
                tuple(x.numpy() for x in as_inputs(b)) for b in data.calibration_batches(spec.export.calibration_images)]
            target = spec.export.int8_target
            options = dict(op_types=graph.int8_op_types, target=target, exclude=spec.export.int8_exclude,
                           exclude_nodes=[*TARGET_FLOAT[target], *graph.int8_exclude] if graph.int8_exclude else None)
            if spec.export.int8_auto_exclude and calib:  # no batches: quantize_int8 says so
                int8, report["int8_auto"] = quantize_int8_auto(fp32, results / "model_int8.onnx", calib,
                                                               tuple(a[:1] for a in calib[0]), **options)
            else:
                int8 = quantize_int8(fp32, results / "model_int8.onnx", calib, **options)
            runtimes["onnx_int8"] = (load_predictor(t, int8), int8)
            report["onnx_int8"] = str(int8)
            report["int8_float_nodes"] = _float_nodes(int8)
        if spec.export.int8:  # accuracy and latency of each runtime, side by side
            example = t.example_inputs(meta)
            for name, (pred, path) in runtimes.items():
                metrics = t.evaluate(spec, pred, data, results / f"eval_{name}")
                report["runtimes"][name] = {
                    t.headline: metrics[t.headline], "latency_ms_batch1": _latency(pred, example),
                    "file_bytes": Path(path or model).stat().st_size,
                }
        if spec.export.engine:
            export_tensorrt(fp32, results / "model.engine", fp16=True, int8=False)
            report["engine"] = str(results / "model.engine")
        atomic_write_json(results / "export_report.json", report)
        for name, row in report["runtimes"].items():
            log.info("%-10s %s=%.4f latency=%.2f ms size=%.2f MB", name, t.headline, row[t.headline],
                     row["latency_ms_batch1"], row["file_bytes"] / 1e6)
        log.info("exported %s%s", fp32, f" and {report['onnx_int8']}" if "onnx_int8" in report else "")
        return report
