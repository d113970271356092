"""One function per verb, shared by every task. The CLI is a thin layer over these.

    from transferkit import api
    api.train("classification", "spec.yaml", "runs/cls", ["train.epochs=3"])
    api.evaluate("classification", "spec.yaml", "runs/eval", model="runs/cls/best.ckpt")
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from .engine.checkpoint import META_KEY, read_checkpoint
from .engine.run import RunFolder, is_rank_zero
from .errors import ModelError, SpecError, TrainingInterrupted
from .io import atomic_torch_save, atomic_write_json, atomic_write_text
from .spec import load_spec, render_default_spec, to_yaml
from .tasks import get_task
from .tasks.base import Predictor

log = logging.getLogger("transferkit")

TRAIN_ARTIFACTS = ("last.ckpt", "best.ckpt", "status.json", "metrics.json", "load_report.json", "tensorboard")


def default_spec(task: str) -> str:
    t = get_task(task)
    return render_default_spec(t.spec_class, t.default_spec_header())


def _spec(task, spec_path, overrides):
    t = get_task(task)
    return t, load_spec(t.spec_class, spec_path, overrides or [])


def _write_spec(spec, results: Path) -> None:
    if is_rank_zero():
        atomic_write_text(results / "spec.yaml", to_yaml(spec))


# -- train --------------------------------------------------------------------------------------

def train(task: str, spec_path: str | Path | None, results: str | Path, overrides: Sequence[str] = (),
          *, overwrite: bool = False, log_file: str | Path | None = None) -> dict[str, Any]:
    import lightning.pytorch as pl

    from .engine.trainer import InterruptCheckpoint, build_trainer

    t, spec = _spec(task, spec_path, overrides)
    results = Path(results)
    with RunFolder(results, log_file=log_file):
        resume = spec.train.resume
        last = results / "last.ckpt"
        if is_rank_zero():
            if resume and not last.is_file():
                raise SpecError(f"train.resume=true but {last} does not exist; train without resume first")
            if not resume and any((results / a).exists() for a in ("last.ckpt", "best.ckpt", "status.json")):
                if not overwrite:
                    raise SpecError(f"results folder {results} already holds a training run; pass train.resume=true "
                                    "to continue it, --overwrite to replace it, or another -r DIR")
                for name in TRAIN_ARTIFACTS:
                    p = results / name
                    shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        _write_spec(spec, results)
        pl.seed_everything(spec.train.seed, workers=True, verbose=False)
        data = t.build_data(spec)
        module, report = t.build_training_module(spec, data)
        if report is not None:
            log.info(report.summary())
            if is_rank_zero() and not resume:
                atomic_write_json(results / "load_report.json", report.as_dict())
        trainer = build_trainer(spec.train, results, t.monitor, t.monitor_mode)
        started = time.time()
        try:
            trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume else None)
        except SystemExit:  # Lightning exits after Ctrl-C; InterruptCheckpoint has saved last.ckpt
            if any(isinstance(cb, InterruptCheckpoint) and cb.interrupted for cb in trainer.callbacks):
                raise TrainingInterrupted(
                    f"training interrupted; a resumable checkpoint is in {last}. Continue with: "
                    f"tkit {task} train -e {spec_path or 'SPEC'} -r {results} train.resume=true") from None
            raise
        metrics = _final_train_metrics(trainer, module, data, started)
        if is_rank_zero():
            atomic_write_json(results / "metrics.json", metrics)
            log.info("best %s = %s; checkpoints, logs and TensorBoard events are in %s",
                     t.monitor, metrics.get("best", {}).get(t.monitor), results)
        return metrics


def _final_train_metrics(trainer, module, data, started: float) -> dict[str, Any]:
    cb = trainer.checkpoint_callback
    final = {k: (v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v)
             for k, v in trainer.callback_metrics.items() if not k.endswith("_step")}
    best_score = cb.best_model_score.item() if cb is not None and cb.best_model_score is not None else None
    skipped = {**getattr(data, "skipped", {}), **getattr(module, "bad_files", {})}
    return {
        "task": module.meta["task"],
        "epochs_completed": trainer.current_epoch,
        "global_step": trainer.global_step,
        "final": {k.removesuffix("_epoch"): v for k, v in final.items()},
        "best": {cb.monitor: best_score, "checkpoint": str(cb.best_model_path)} if cb is not None else {},
        "classes": module.meta.get("classes"),
        "train_images": len(getattr(data, "train_items", [])),
        "val_images": len(getattr(data, "val_items", [])),
        "skipped_images": {"count": len(skipped), "files": skipped},
        "warnings": list(getattr(data, "warnings", [])),
        "world_size": trainer.world_size,
        "wall_time_s": round(time.time() - started, 2),
    }


# -- loading a model for evaluate / inference / prune / export ----------------------------------

def load_predictor(task, model: str | Path | None, device: str = "cpu") -> Predictor:
    if model is None:
        raise SpecError("this verb needs a model: pass -m PATH (a best.ckpt, pruned.ckpt or exported .onnx)")
    path = Path(model)
    if path.suffix.lower() == ".onnx":
        from .optimize.runtime import OnnxModel

        onnx_model = OnnxModel(path)
        raw = onnx_model.metadata.get(META_KEY)
        if raw is None:
            raise ModelError(f"{path} has no transferkit metadata; export it with `tkit {task.name} export`, "
                             "or bring your own ONNX with `tkit model import-onnx`")
        meta = json.loads(raw)
        if meta.get("task") != task.name:
            raise ModelError(f"{path} is a {meta.get('task')} model, not {task.name}")

        def run_onnx(images: torch.Tensor) -> list[torch.Tensor]:
            outputs = onnx_model(images.numpy().astype("float32"))
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            return [torch.from_numpy(o) for o in outputs]

        return Predictor(meta, run_onnx, "onnx", path)
    meta, state = read_checkpoint(path, task=task.name)
    net = load_net(task, meta, state, path)
    net.eval().to(device)

    @torch.inference_mode()
    def run_torch(images: torch.Tensor) -> list[torch.Tensor]:
        out = net(images.to(device).contiguous(memory_format=torch.channels_last))
        out = out if isinstance(out, (list, tuple)) else [out]
        return [o.cpu() for o in out]

    predictor = Predictor(meta, run_torch, "pytorch", path)
    predictor.net = net
    return predictor


def load_net(task, meta: dict, state: dict, path: Path):
    net = task.build_net(meta)
    net_state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")} or state
    try:
        net.load_state_dict(net_state)
    except RuntimeError as e:
        raise ModelError(f"{path}: weights do not fit the {meta.get('backbone')} architecture it names "
                         f"({str(e).splitlines()[0][:200]})") from e
    return net.to(memory_format=torch.channels_last)


def _model_verb_setup(task, spec_path, overrides, model):
    t, spec = _spec(task, spec_path, overrides)
    predictor = load_predictor(t, model)
    spec = t.spec_for_model(spec, predictor.meta)
    return t, spec, predictor


# -- evaluate / inference -----------------------------------------------------------------------

def evaluate(task: str, spec_path, results, overrides: Sequence[str] = (), *, model=None, log_file=None) -> dict:
    results = Path(results)
    with RunFolder(results, log_file=log_file):
        t, spec, predictor = _model_verb_setup(task, spec_path, overrides, model)
        _write_spec(spec, results)
        data = t.build_data(spec, classes=predictor.meta["classes"], mean=predictor.meta["mean"], std=predictor.meta["std"])
        metrics = t.evaluate(spec, predictor, data, results)
        atomic_write_json(results / "metrics.json", metrics)
        headline = {k: v for k, v in metrics.items() if isinstance(v, float)}
        log.info("evaluated %s (%s): %s", predictor.source, predictor.kind,
                 ", ".join(f"{k}={v:.4f}" for k, v in headline.items()))
        return metrics


def inference(task: str, spec_path, results, overrides: Sequence[str] = (), *, model=None, log_file=None) -> dict:
    results = Path(results)
    with RunFolder(results, log_file=log_file):
        t, spec, predictor = _model_verb_setup(task, spec_path, overrides, model)
        _write_spec(spec, results)
        summary = t.inference(spec, predictor, results)
        atomic_write_json(results / "inference.json", summary)
        log.info("wrote predictions for %d images to %s (%d skipped)", summary["images"], results,
                 summary["skipped_images"]["count"])
        return summary
