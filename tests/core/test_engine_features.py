"""Engine features every task shares: gradient clipping and accumulation, a backbone learning rate of its own,
early stopping on any named metric, cuDNN benchmark only for fixed input shapes, bf16 autocast on the CPU."""
from __future__ import annotations

import gc
import json
import logging
import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

import transferkit.engine.trainer as trainer_module
from transferkit.engine import budget
from transferkit import api
from transferkit.cli import main
from transferkit.data.demo import build_demo
from transferkit.engine.module import TaskModule
from transferkit.engine.trainer import build_trainer, cpu_native_bf16, cudnn_benchmark
from transferkit.errors import SpecError
from transferkit.spec import TrainConfig, load_spec
from transferkit.tasks import get_task

# 20 training images in batches of 4: five batches an epoch unless limit_train_batches says fewer
# (0.2 is one batch; 1 would mean all of them, a number of batches counts from 2).
FAST = ["data.image_size=32", "train.batch_size=4", "train.num_workers=0", "train.epochs=1", "train.histograms=false",
        "model.pretrained=false", "train.accelerator=cpu", "train.learning_rate=0.01"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("digits")
    build_demo("digits", root, seed=0, per_class=2, val_per_class=1, size=32)
    return root


class Recorder(Callback):
    """What the optimizer saw: its param groups at the start, the global gradient norm before clipping
    (Lightning's on_before_optimizer_step) and after it (an optimizer step hook), and the steps taken."""

    def __init__(self) -> None:
        self.groups: list[dict] = []
        self.pre: list[float] = []
        self.post: list[float] = []
        self.output_dtypes: set[torch.dtype] = set()

    def on_train_start(self, trainer, pl_module) -> None:
        opt = trainer.optimizers[0]
        self.groups = [{k: v for k, v in g.items()} for g in opt.param_groups]
        opt.register_step_post_hook(lambda o, args, kwargs: self.post.append(grad_norm(pl_module)))
        pl_module.net.fc.register_forward_hook(
            lambda m, i, out: self.output_dtypes.add(out.dtype) if m.training else None)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.pre.append(grad_norm(pl_module))


def grad_norm(module: nn.Module) -> float:
    grads = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(grads)))


def train(digits: Path, out: Path, monkeypatch, *overrides: str, callbacks: tuple = ()) -> tuple[dict, Recorder, dict]:
    """A tiny classification run through api.train; returns its metrics.json, a Recorder and build_trainer's kwargs."""
    recorder, seen = Recorder(), {}
    real = trainer_module.build_trainer

    def with_recorder(*args, **kwargs):
        seen.update(kwargs)
        kwargs["callbacks"] = [*kwargs.get("callbacks", ()), recorder, *callbacks]
        trainer = real(*args, **kwargs)
        seen["trainer"] = trainer
        return trainer

    monkeypatch.setattr(trainer_module, "build_trainer", with_recorder)  # api.train imports it at call time
    metrics = api.train("classification", None, out, [f"data.train_dir={digits / 'train'}",
                                                      f"data.val_dir={digits / 'val'}", *FAST, *overrides])
    return metrics, recorder, seen


def status(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "status.json").read_text().splitlines()]


# -- spec keys ------------------------------------------------------------------------------------

def test_new_train_keys_are_in_default_spec_and_validated():
    text = api.default_spec("classification")
    for key in ("grad_clip_norm", "accumulate_grad_batches", "backbone_lr_scale", "early_stopping_metric",
                "early_stopping_mode", "early_stopping_min_delta"):
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(f"{key}:"))
        assert "  # " in line, line  # a one-line description
    schema = get_task("classification").spec_class
    for bad in ("train.grad_clip_norm=0", "train.accumulate_grad_batches=0", "train.backbone_lr_scale=0",
                "train.early_stopping_mode=down", "train.early_stopping_min_delta=-1"):
        with pytest.raises(SpecError, match=bad.split("=")[0]):
            load_spec(schema, None, [bad])


# -- gradient clipping and accumulation ---------------------------------------------------------

def test_grad_clip_norm_caps_the_global_gradient_norm_of_every_step(digits, tmp_path, monkeypatch):
    metrics, rec, _ = train(digits, tmp_path / "r", monkeypatch, "train.grad_clip_norm=0.05",
                            "train.limit_train_batches=3")
    assert len(rec.pre) == len(rec.post) == metrics["global_step"] == 3
    assert min(rec.pre) > 0.05  # an unclipped step would have moved further
    for after in rec.post:
        assert after == pytest.approx(0.05, rel=1e-3)


def test_without_grad_clip_norm_gradients_are_left_alone(digits, tmp_path, monkeypatch):
    _, rec, seen = train(digits, tmp_path / "r", monkeypatch, "train.limit_train_batches=2")
    assert rec.post == pytest.approx(rec.pre, rel=1e-6)
    assert seen["trainer"].gradient_clip_val is None


def test_accumulation_steps_the_optimizer_and_the_schedule_once_per_n_batches(digits, tmp_path, monkeypatch):
    # 4 batches an epoch, 2 per step: 2 optimizer steps an epoch. Warm-up of one epoch is those 2 steps, so
    # epoch 0 ends exactly at the peak rate (counted in batches it would end at 3/4 of it), and the cosine
    # decay reaches 0 at the last step of epoch 1 (counted in batches it would end half-way).
    metrics, rec, _ = train(digits, tmp_path / "r", monkeypatch, "train.accumulate_grad_batches=2",
                            "train.limit_train_batches=4", "train.epochs=2", "train.warmup_epochs=1",
                            "train.lr_scheduler=cosine")
    assert metrics["global_step"] == len(rec.post) == 4
    lines = status(tmp_path / "r")
    assert [r["step"] for r in lines] == [2, 4]
    assert lines[0]["lr"] == pytest.approx(0.01)
    assert lines[1]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_linear_schedule_with_warmup_fraction_peaks_then_decays_to_zero(digits, tmp_path, monkeypatch):
    # 4 steps an epoch, 2 epochs = 8 steps; warm-up over a quarter of them = 2 steps, then linear decay:
    # after step 4 (epoch 0's end) the factor is 1 - (4 - 2) / 6, after step 8 it is 0.
    metrics, _, _ = train(digits, tmp_path / "r", monkeypatch, "train.limit_train_batches=4", "train.epochs=2",
                          "train.warmup_fraction=0.25", "train.lr_scheduler=linear")
    assert metrics["global_step"] == 8 and metrics["planned_epochs"] == 2  # no train.max_minutes: train.epochs
    assert "learning-rate schedule now ends" not in (tmp_path / "r" / "log.txt").read_text()
    lines = status(tmp_path / "r")
    assert lines[0]["lr"] == pytest.approx(0.01 * (1 - 2 / 6))
    assert lines[1]["lr"] == pytest.approx(0.0, abs=1e-12)


class FakeClock(Callback):
    """The clock TimeBudget reads, moved on 210 s by each training batch and 180 s by each validation batch: with
    2 training batches and 1 validation batch an epoch "takes" 600 s. (Lightning's max_time reads the real clock,
    which a tiny run keeps far below train.max_minutes.)"""

    def __init__(self, monkeypatch, start: float = 0.0) -> None:
        self.now = start
        monkeypatch.setattr(budget, "_now", lambda: self.now)

    def on_train_batch_end(self, *args, **kwargs) -> None:
        self.now += 210

    def on_validation_batch_end(self, *args, **kwargs) -> None:
        self.now += 180


class StopAfter(Callback):
    """Ends the run after `epochs` epochs, as a stopped job would (last.ckpt holds the last of them)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


BUDGET = ["train.limit_train_batches=2", "train.epochs=10", "train.max_minutes=30", "train.lr_scheduler=cosine"]


def test_a_time_budget_plans_the_epochs_that_fit_and_the_schedule_ends_with_them(digits, tmp_path, monkeypatch,
                                                                                   caplog):
    # 30 minutes, and the first epoch takes 10 (validation included; its training alone, 7, would plan 4): 3 of
    # train.epochs=10 fit. The warm-up was half of 10 epochs; it is now half of what is left after the first
    # epoch (2 steps): epoch 2 ends at the peak rate and the cosine reaches 0 at the end of epoch 3.
    caplog.set_level(logging.INFO, logger="transferkit")
    metrics, _, seen = train(digits, tmp_path / "r", monkeypatch, *BUDGET, "train.warmup_fraction=0.5",
                             callbacks=(FakeClock(monkeypatch),))
    assert (metrics["planned_epochs"], metrics["epochs_completed"], metrics["global_step"]) == (3, 3, 6)
    lrs = [line["lr"] for line in status(tmp_path / "r")]
    assert lrs == pytest.approx([0.01 * 3 / 10, 0.01, 0.0], abs=1e-12)
    planned = [r.getMessage() for r in caplog.records if "learning-rate schedule now ends" in r.getMessage()]
    assert planned == ["train.max_minutes=30: one epoch took 600 s, so 3 of train.epochs=10 fit; the learning-rate "
                       "schedule now ends at epoch 3"]  # later epochs confirm the plan: one line
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "warmup" in r.getMessage()]
    assert any(type(cb).__name__ == "Timer" for cb in seen["trainer"].callbacks)  # max_time: the safety net


def test_a_run_resumed_under_a_time_budget_keeps_its_plan_and_does_not_warm_up_again(digits, tmp_path, monkeypatch):
    # One-epoch warm-up, then a cosine over the 3 epochs that fit; stopped after epoch 2 and resumed, the run
    # trains the third epoch only and ends at rate 0 (a fresh schedule over train.epochs=10 would still be high).
    out = tmp_path / "r"
    train(digits, out, monkeypatch, *BUDGET, "train.warmup_epochs=1", callbacks=(FakeClock(monkeypatch), StopAfter(2)))
    assert [line["lr"] for line in status(out)] == pytest.approx([0.01, 0.005])
    metrics, rec, _ = train(digits, out, monkeypatch, *BUDGET, "train.warmup_epochs=1", "train.resume=true",
                            callbacks=(FakeClock(monkeypatch, start=5000.0),))
    assert (metrics["planned_epochs"], metrics["epochs_completed"], metrics["global_step"]) == (3, 3, 6)
    assert len(rec.post) == 2  # the third epoch's steps
    assert [line["lr"] for line in status(out)] == pytest.approx([0.01, 0.005, 0.0], abs=1e-12)


# -- backbone learning rate -----------------------------------------------------------------------

def test_backbone_and_head_learn_at_their_own_rates(digits, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "r"
    _, rec, seen = train(digits, out, monkeypatch, "train.backbone_lr_scale=0.1", "train.learning_rate=0.02",
                         "train.lr_scheduler=constant", "train.limit_train_batches=0.2")
    module_net = seen["trainer"].lightning_module.net
    by_name: dict[str, set[int]] = {}
    for g in rec.groups:
        assert g["lr"] == pytest.approx({"backbone": 0.002, "head": 0.02}[g["name"]])
        if g["weight_decay"] == 0.0:  # the weight-decay split stays: no decay on biases and norm scales
            assert all(p.ndim <= 1 for p in g["params"])
        else:
            assert all(p.ndim > 1 for p in g["params"])
        by_name.setdefault(g["name"], set()).update(id(p) for p in g["params"])
    assert by_name["backbone"] == {id(p) for p in module_net.backbone.parameters() if p.requires_grad}
    assert by_name["head"] == {id(module_net.fc.weight), id(module_net.fc.bias)}

    line = status(out)[0]
    assert (line["lr"], line["lr_backbone"], line["lr_head"]) == pytest.approx((0.02, 0.002, 0.02))
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    logged = {tag: events.Scalars(tag)[-1].value for tag in ("train/lr_backbone", "train/lr_head")}
    assert logged == pytest.approx({"train/lr_backbone": 0.002, "train/lr_head": 0.02})


class Plain(TaskModule):
    pass


def test_a_net_without_backbone_is_all_head_and_frozen_parameters_are_left_out():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    net[0].weight.requires_grad_(False)
    groups = Plain(net, {}, TrainConfig()).parameter_groups()
    assert list(groups) == ["head"]
    assert {id(p) for p in groups["head"]} == {id(p) for p in net.parameters() if p.requires_grad}


def test_parameter_groups_that_miss_a_parameter_are_refused():
    class Partial(TaskModule):
        def parameter_groups(self):
            return {"head": [self.net[1].weight]}

    with pytest.raises(ValueError, match="every trainable parameter exactly once"):
        Partial(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), {}, TrainConfig()).configure_optimizers()


# -- early stopping ----------------------------------------------------------------------------

def test_early_stopping_watches_the_named_metric_in_its_direction(digits, tmp_path, monkeypatch):
    # min_delta larger than any change: only the first epoch counts as an improvement, so patience 1
    # stops the run after its second epoch of five.
    metrics, _, seen = train(digits, tmp_path / "r", monkeypatch, "train.epochs=5", "train.limit_train_batches=0.2",
                             "train.early_stopping_patience=1", "train.early_stopping_metric=val/loss",
                             "train.early_stopping_mode=min", "train.early_stopping_min_delta=1000")
    assert metrics["epochs_completed"] == 2
    assert [r["epoch"] for r in status(tmp_path / "r")] == [0, 1]
    stopper = next(c for c in seen["trainer"].callbacks if isinstance(c, trainer_module.EarlyStopping))
    assert (stopper.monitor, stopper.mode) == ("val/loss", "min")


def test_early_stopping_defaults_to_the_task_monitor_and_its_direction(tmp_path):
    trainer = build_trainer(TrainConfig(accelerator="cpu", early_stopping_patience=3), tmp_path, "val/mAP", "max")
    stopper = next(c for c in trainer.callbacks if isinstance(c, trainer_module.EarlyStopping))
    assert (stopper.monitor, stopper.mode, stopper.patience) == ("val/mAP", "max", 3)


def test_early_stopping_on_another_metric_needs_its_mode(tmp_path):
    with pytest.raises(SpecError, match="train.early_stopping_mode=min"):
        build_trainer(TrainConfig(accelerator="cpu", early_stopping_patience=2, early_stopping_metric="val/loss"),
                      tmp_path, "val/acc", "max")
    with pytest.raises(SpecError, match="contradicts val/acc"):
        build_trainer(TrainConfig(accelerator="cpu", early_stopping_patience=2, early_stopping_mode="min"),
                      tmp_path, "val/acc", "max")


def test_an_early_stopping_metric_the_run_never_logs_is_one_line_naming_the_logged_ones(digits, tmp_path, capsys):
    code = main(["classification", "train", "-r", str(tmp_path / "r"), f"data.train_dir={digits / 'train'}",
                 f"data.val_dir={digits / 'val'}", *FAST, "train.epochs=3", "train.limit_train_batches=0.2",
                 "train.early_stopping_patience=1", "train.early_stopping_metric=val/wer",
                 "train.early_stopping_mode=min"])
    assert code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("tkit: error:")]
    assert len(err) == 1 and "Traceback" not in err[0]
    assert "train.early_stopping_metric='val/wer'" in err[0]
    for logged in ("val/loss", "val/acc", "train/loss"):
        assert logged in err[0]
    assert gc.get_freeze_count() == 0  # the failed run gave the objects it froze back to the collector


# -- cuDNN benchmark ------------------------------------------------------------------------------

def test_cudnn_benchmark_only_on_gpu_for_fixed_shapes_and_not_deterministic():
    assert cudnn_benchmark(TrainConfig(), "gpu", fixed_input_shape=True)
    assert not cudnn_benchmark(TrainConfig(), "cpu", fixed_input_shape=True)
    assert not cudnn_benchmark(TrainConfig(), "gpu", fixed_input_shape=False)
    assert not cudnn_benchmark(TrainConfig(deterministic=True), "gpu", fixed_input_shape=True)
    for name in ("classification", "detectnet_v2", "yolo_v4_tiny"):  # images resized to one size
        assert get_task(name).fixed_input_shape is True


def test_train_passes_the_task_input_shape_kind_to_the_trainer(digits, tmp_path, monkeypatch):
    monkeypatch.setattr(type(get_task("classification")), "fixed_input_shape", False)
    _, _, seen = train(digits, tmp_path / "r", monkeypatch, "train.limit_train_batches=0.2")
    assert seen["fixed_input_shape"] is False


# -- bf16 on the CPU ------------------------------------------------------------------------------

def test_bf16_mixed_trains_on_the_cpu_under_bf16_autocast(digits, tmp_path, monkeypatch):
    metrics, rec, _ = train(digits, tmp_path / "r", monkeypatch, "train.precision=bf16-mixed",
                            "train.limit_train_batches=2", "train.grad_clip_norm=1.0")
    assert rec.output_dtypes == {torch.bfloat16}  # the head's training outputs: autocast was on
    assert math.isfinite(metrics["final"]["train/loss"]) and math.isfinite(metrics["final"]["val/loss"])
    assert 0.0 <= metrics["best"]["val/acc"] <= 1.0
    assert metrics["global_step"] == 2


def test_cpu_bf16_support_is_read_from_the_cpu_flags():
    assert cpu_native_bf16("flags\t\t: fpu sse avx2 avx512f avx512_bf16\n") is True
    assert cpu_native_bf16("flags\t\t: fpu sse avx2 amx_tile amx_bf16\n") is True
    assert cpu_native_bf16("Features\t: fp asimd bf16 i8mm\n") is True  # Arm
    assert cpu_native_bf16("flags\t\t: fpu sse avx2 avx512f\n") is False
    assert cpu_native_bf16("") is None


def test_bf16_on_a_cpu_without_native_bf16_gives_one_warning_line(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(trainer_module, "cpu_native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="transferkit"):
        build_trainer(TrainConfig(accelerator="cpu", precision="bf16-mixed"), tmp_path, "val/acc", "max")
        build_trainer(TrainConfig(accelerator="cpu", precision="32"), tmp_path / "b", "val/acc", "max")
    warned = [r.getMessage() for r in caplog.records if "bfloat16" in r.getMessage()]
    assert len(warned) == 1 and "emulated" in warned[0] and "\n" not in warned[0]


def test_resume_with_other_parameter_groups_is_refused_with_the_way_out(digits, tmp_path, capsys):
    data = [f"data.train_dir={digits / 'train'}", f"data.val_dir={digits / 'val'}"]
    run = tmp_path / "run"
    assert main(["classification", "train", "-r", str(run), *data, *FAST, "model.freeze_blocks=[0,1,2,3,4]"]) == 0
    capsys.readouterr()
    code = main(["classification", "train", "-r", str(run), *data, *FAST, "train.epochs=2", "train.resume=true"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot be resumed" in err and f"model.pretrained={run / 'last.ckpt'}" in err
    assert "Traceback" not in err
