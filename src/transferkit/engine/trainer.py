"""Lightning Trainer factory and the callbacks every task's training shares."""
from __future__ import annotations

import gc
import json
import logging
import math
import os
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..data.resumable import ResumableLoader
from ..io import atomic_write_text, json_text
from ..spec import TrainConfig
from ..errors import SpecError, TrainingDiverged
from .budget import TimeBudget
from .checkpoint import AtomicCheckpointIO
from .module import learning_rates
from .run import is_rank_zero

log = logging.getLogger("transferkit")


def _number(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().float().item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class StatusCallback(Callback):
    """Writes `status.json`: one JSON object per line per epoch (epoch, step, losses, metrics, time).

    Also prints a one-line epoch summary, which is the progress report when stdout is not a
    terminal (CI logs, notebooks).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lines: list[str] = []
        self.start = time.time()
        self.epoch_start = time.time()

    def on_train_start(self, trainer, pl_module) -> None:  # after a resume has restored the epoch
        self.start = time.time()
        if self.path.is_file() and trainer.current_epoch > 0:  # resumed: keep the epochs already done
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line).get("epoch", 0) < trainer.current_epoch:
                        kept.append(line)
                except json.JSONDecodeError:
                    continue
            self.lines = kept

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epoch_start = time.time()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not is_rank_zero():
            return
        # train/lr* in callback_metrics are still the previous epoch's here: the rates are read from the optimizer below
        metrics = {k: _number(v) for k, v in trainer.callback_metrics.items()
                   if not k.endswith("_step") and not k.startswith("train/lr")}
        record = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            **{k.removesuffix("_epoch"): v for k, v in sorted(metrics.items())},
            "epoch_time_s": round(time.time() - self.epoch_start, 3),
            "elapsed_s": round(time.time() - self.start, 3),
        }
        if trainer.optimizers:  # read now: the module logs train/lr* after this hook runs
            record.update(learning_rates(trainer.optimizers[0]))
        self.lines.append(json_text(record, indent=None))
        atomic_write_text(self.path, "\n".join(self.lines) + "\n")
        shown = ", ".join(f"{k}={v:.4g}" for k, v in record.items()
                          if isinstance(v, float) and k not in ("epoch_time_s", "elapsed_s") and not k.startswith("lr"))
        log.info("epoch %d/%d step %d: %s (%.1fs)", trainer.current_epoch + 1, trainer.max_epochs,
                 trainer.global_step, shown, record["epoch_time_s"])


class InterruptCheckpoint(Callback):
    """On Ctrl-C (SIGINT) or SIGTERM, save `last.ckpt` so `train.resume=true` continues from where it stopped.

    SIGTERM is what Kubernetes, SLURM and cloud schedulers send before they stop a job. Lightning's
    signal connector owns it during fit: it notes the signal and ends the fit loop after the current
    batch with SIGTERMException, so the checkpoint holds whole batches. Ctrl-C arrives as
    KeyboardInterrupt wherever the run is. `signal` names the one that stopped the run.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.signal: str | None = None

    @property
    def interrupted(self) -> bool:
        return self.signal is not None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.signal = "SIGINT"
        elif isinstance(exception, SIGTERMException):
            self.signal = "SIGTERM"
        else:
            return
        trainer.save_checkpoint(self.path)


class TrainedBatches(Callback):
    """Tells the training loader how many of the epoch's batches were trained on, for a mid-epoch checkpoint."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loader = trainer.train_dataloader
        if isinstance(loader, ResumableLoader):
            loader.mark_trained(batch_idx + 1)


class StopOnNonFinite(Callback):
    """Stops training with TrainingDiverged once the training loss is NaN or infinite, before anything is
    saved from that step on; a checkpoint whose weights are not finite is refused the same way.

    On the CPU every loss is checked as it comes. Reading a GPU tensor waits for the GPU, so there the
    losses are kept on the device and checked together every `every` steps and before every
    validation and checkpoint; the error still names the first bad step.
    """

    def __init__(self, learning_rate: float, every: int = 50):
        self.learning_rate = learning_rate
        self.every = max(1, every)
        self.pending: list[tuple[int, int, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        self.pending.append((trainer.current_epoch, trainer.global_step, loss.detach()))
        if loss.device.type == "cpu" or len(self.pending) >= self.every:
            self.check(trainer)

    def on_validation_start(self, trainer, pl_module) -> None:
        self.check(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.check(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        self.check(trainer)
        weights = [(k, v) for k, v in checkpoint.get("state_dict", {}).items()
                   if isinstance(v, torch.Tensor) and v.is_floating_point()]
        if weights and not torch.stack([torch.isfinite(v).all() for _, v in weights]).all().item():
            name = next(k for k, v in weights if not torch.isfinite(v).all())
            raise TrainingDiverged(
                f"training diverged: the weights became NaN or infinite (first: {name}) by epoch "
                f"{trainer.current_epoch + 1}, step {trainer.global_step}; the checkpoint was not saved. "
                f"{self._advice()}")

    def check(self, trainer) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        finite = torch.stack([torch.isfinite(loss).all() for _, _, loss in pending])
        if finite.all().item():
            return
        epoch, step, loss = pending[finite.tolist().index(False)]
        value = loss.float().reshape(-1)
        value = value[~torch.isfinite(value)][0].item()
        raise TrainingDiverged(
            f"training diverged: the training loss became {value} at epoch {epoch + 1}, step {step}; stopped "
            f"before saving anything from that step on. {self._advice()}")

    def _advice(self) -> str:
        return (f"Lower train.learning_rate (now {self.learning_rate:g}; try {self.learning_rate / 10:g}), or set "
                "train.grad_clip_norm=1.0, and rerun with --overwrite")


class RngState(Callback):
    """Keeps the global RNG states (torch, CUDA, numpy, Python) in every checkpoint and restores them on resume.

    Shuffling, augmentation and dropout draw from these generators, so without this a resumed run
    would replay epoch 0's random stream from epoch k on and drift away from the uninterrupted run.
    Stored as tensors and plain ints, so checkpoints still load with `weights_only=True`.
    (Persistent DataLoader workers keep their own generators; those are not captured.)
    """

    def state_dict(self) -> dict[str, Any]:
        import random

        import numpy as np

        version, state, gauss = random.getstate()
        name, keys, pos, has_gauss, cached = np.random.get_state()
        return {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                          "has_gauss": int(has_gauss), "cached": float(cached)},
                "python": {"version": version, "state": list(state), "gauss": gauss}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import random

        import numpy as np

        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        n = state["numpy"]
        np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
        p = state["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


class FrozenGarbageCollector(Callback):
    """Moves every object alive when training starts out of the garbage collector's reach until it ends.

    By then the process holds half a million objects (torch, Lightning, the data, the model) that will
    live as long as the run. Lightning creates enough short-lived objects per step that Python's full
    collection runs every few epochs, and each one walked all of them: 0.3-0.4 s on this 2-core CPU, 10-20 %
    of a few-hundred-image epoch, landing at random. After `gc.freeze()` a full collection only walks what
    training itself created. Garbage created during training is still collected as before; objects
    that were already garbage at the start wait until the end. A process that froze objects itself is
    left alone.
    """

    def __init__(self) -> None:
        self.froze = False

    def on_fit_start(self, trainer, pl_module) -> None:
        if gc.isenabled() and gc.get_freeze_count() == 0:
            gc.freeze()
            self.froze = True

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self.froze:
            gc.unfreeze()
            self.froze = False

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # A run that fails or is interrupted ends without Lightning's teardown hooks; the process may go on
        self.teardown(trainer, pl_module, "fit")


class ThrottledRichProgressBar(RichProgressBar):
    """Lightning's rich progress bar, reading the logged metrics at most every `metrics_every_s` seconds.

    The stock bar reads them after every training batch, and reading a metric logged as a GPU tensor
    (`train/loss`) is a `.item()`, which waits for the GPU to finish: one forced sync per step, however
    fast the steps. The bar's counter still moves every batch; epoch and validation ends show fresh values.
    """

    def __init__(self, metrics_every_s: float = 0.5) -> None:
        super().__init__()
        self.metrics_every_s = metrics_every_s
        self._in_train_batch_end = False
        self._metrics_read_at = -math.inf

    def on_train_batch_end(self, *args, **kwargs) -> None:
        self._in_train_batch_end = True
        try:
            super().on_train_batch_end(*args, **kwargs)
        finally:
            self._in_train_batch_end = False

    def _update_metrics(self, trainer, pl_module) -> None:
        now = time.monotonic()
        if self._in_train_batch_end and now - self._metrics_read_at < self.metrics_every_s:
            return
        self._metrics_read_at = now
        super()._update_metrics(trainer, pl_module)


class MetricEarlyStopping(EarlyStopping):
    """Lightning's EarlyStopping, except that a metric the run never logs is a one-line SpecError listing
    the metrics it does log (Lightning's own is a RuntimeError deep in the fit loop)."""

    def _validate_condition_metric(self, logs: dict[str, torch.Tensor]) -> bool:
        if self.monitor not in logs:
            logged = sorted({k.removesuffix("_step").removesuffix("_epoch") for k in logs})
            raise SpecError(f"train.early_stopping_metric={self.monitor!r} is not a metric this run logs; it logs: "
                            f"{', '.join(logged) or 'nothing yet'} (fix the key and rerun with --overwrite)")
        return super()._validate_condition_metric(logs)


def early_stopping(train: TrainConfig, monitor: str, mode: str) -> EarlyStopping | None:
    """The early-stopping callback the spec asks for (None when train.early_stopping_patience is 0).

    The metric defaults to the task's monitor, and so does its direction; any other metric needs
    train.early_stopping_mode, since only the task knows which way its own monitor improves.
    """
    metric = train.early_stopping_metric or monitor
    chosen = train.early_stopping_mode
    if not train.early_stopping_patience:
        if train.early_stopping_metric or chosen or train.early_stopping_min_delta:
            log.warning("train.early_stopping_metric/mode/min_delta are set but train.early_stopping_patience=0 "
                        "turns early stopping off; set a patience such as train.early_stopping_patience=5")
        return None
    if metric == monitor and chosen is not None and chosen != mode:
        raise SpecError(f"train.early_stopping_mode={chosen} contradicts {monitor}, which improves towards {mode}; "
                        f"drop the key or set train.early_stopping_mode={mode}")
    if metric != monitor and chosen is None:
        raise SpecError(f"train.early_stopping_metric={metric}: say which way it improves with "
                        f"train.early_stopping_mode=min (losses, error rates) or =max (accuracy, mAP)")
    return MetricEarlyStopping(monitor=metric, mode=chosen or mode, patience=train.early_stopping_patience,
                               min_delta=train.early_stopping_min_delta)


def cpu_native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16, AMX-BF16, Arm BF16), from the flags in
    /proc/cpuinfo (or the `cpuinfo` text given); None when unknown (no /proc/cpuinfo: macOS, Windows).

    Without it, bf16 autocast on the CPU still trains, but every bf16 kernel is emulated: slower than fp32.
    """
    text = cpuinfo
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            text = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, Arm
            flags.update(value.split())
    if flags:
        return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    return None


def resolve_precision(train: TrainConfig, accelerator: str) -> str:
    if train.precision == "16-mixed" and accelerator == "cpu":
        log.warning("train.precision=16-mixed needs a GPU; using bf16-mixed on the CPU")
        precision = "bf16-mixed"
    else:
        precision = train.precision
    if precision == "bf16-mixed" and accelerator == "cpu" and cpu_native_bf16() is False:
        log.warning("train.precision=bf16-mixed: this CPU (%s) has no native bfloat16 (no avx512_bf16 / amx_bf16), "
                    "so bf16 runs emulated, usually slower than train.precision=32",
                    torch.backends.cpu.get_cpu_capability())
    return precision


def compile_network(net: torch.nn.Module, train: TrainConfig, accelerator: str) -> None:
    """train.compile: compile `net`'s forward in place (nn.Module.compile), so its parameters, state_dict keys and
    checkpoints stay those of the plain network; every verb after training loads it uncompiled."""
    import shutil

    import torch._dynamo

    backends = torch._dynamo.list_backends(exclude_tags=())
    if train.compile_backend not in backends:
        raise SpecError(f"train.compile_backend={train.compile_backend!r} is not a torch.compile backend here; "
                        f"choose one of: {', '.join(sorted(backends))}")
    if train.compile_backend == "inductor" and accelerator == "cpu" and not (
            shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
        raise SpecError("train.compile=true with the inductor backend needs a C++ compiler on the CPU (e.g. "
                        "apt-get install g++); or set train.compile=false")
    if train.compile_mode == "reduce-overhead" and accelerator == "cpu":
        log.warning("train.compile_mode=reduce-overhead uses CUDA graphs; on the CPU it compiles like 'default'")
    log.info("train.compile=true (%s, mode %s): the first training and validation steps compile the network "
             "(tens of seconds on a CPU, once per run and input shape)", train.compile_backend, train.compile_mode)
    net.compile(backend=train.compile_backend, mode=None if train.compile_mode == "default" else train.compile_mode)


def resolve_accelerator(train: TrainConfig) -> str:
    if train.accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if train.accelerator == "gpu" and not torch.cuda.is_available():
        raise SpecError("train.accelerator=gpu (or --gpus) but no CUDA GPU is visible; use train.accelerator=cpu")
    return train.accelerator


def quiet_lightning() -> None:
    """Keep the terminal for what the user asked about: Lightning's banners and tips go to log.txt only."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (".*Checkpoint directory .* exists and is not empty.*", ".*isinstance\\(treespec, LeafSpec\\).*",
                    ".*was configured so 100% of the batches.*", ".*does not have many workers.*",
                    ".*litlogger.*", ".*The number of training batches .* is smaller than the logging interval.*",
                    # a task's module moving its own batches (classification's data.augment_on=device) is by design
                    ".*in `LightningModule` but have passed in a `LightningDataModule`.*"):
        warnings.filterwarnings("ignore", message=pattern)


def cluster_shape(train: TrainConfig, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(machines, processes per machine) of the run: those of the torchrun launch this process is part of, else
    train.num_nodes and train.num_devices (which SLURM's srun needs: Lightning checks them against SLURM_NTASKS).
    Lightning's cluster environment then takes the ranks and the rendezvous from the launcher; a spec that names
    another shape than torchrun's is refused, naming both."""
    env = os.environ if environ is None else environ
    launched = None
    if "TORCHELASTIC_RUN_ID" in env and "WORLD_SIZE" in env and "LOCAL_WORLD_SIZE" in env:  # torchrun
        world, local = int(env["WORLD_SIZE"]), int(env["LOCAL_WORLD_SIZE"])
        launched = ("torchrun", max(1, world // max(1, local)), local, world)
    if launched is None or launched[3] <= 1:
        return train.num_nodes, train.num_devices
    launcher, nodes, per_node, world = launched
    if (train.num_nodes, train.num_devices) not in ((1, 1), (nodes, per_node)):
        raise SpecError(f"train.num_nodes={train.num_nodes} x train.num_devices={train.num_devices} does not match the "
                        f"{launcher} launch ({nodes} node(s) x {per_node} process(es) = world size {world}); drop the "
                        "keys (the launch decides) or make them match")
    if (train.num_nodes, train.num_devices) == (1, 1) and is_rank_zero():
        log.info("%s launch: %d node(s) x %d process(es), world size %d", launcher, nodes, per_node, world)
    return nodes, per_node


def cudnn_benchmark(train: TrainConfig, accelerator: str, fixed_input_shape: bool) -> bool:
    """cuDNN's per-shape algorithm search: worth it on a GPU when batches keep one shape; it picks kernels by
    timing, so runs asked to be deterministic go without."""
    return accelerator == "gpu" and fixed_input_shape and not train.deterministic


def build_trainer(
    train: TrainConfig,
    results: Path,
    monitor: str,
    mode: str,
    callbacks: list[Callback] = (),
    max_epochs: int | None = None,
    fixed_input_shape: bool = True,
) -> pl.Trainer:
    """The Lightning Trainer of a training run; `monitor`/`mode` choose best.ckpt (and early stopping by default).

    `fixed_input_shape`: every training batch has one shape (the task's Task.fixed_input_shape), so on a GPU
    cuDNN may benchmark its convolution algorithms once per shape and keep the fastest.
    """
    quiet_lightning()
    accelerator = resolve_accelerator(train)
    stopper = early_stopping(train, monitor, mode)
    num_nodes, devices = cluster_shape(train)
    ddp = devices > 1 or num_nodes > 1
    checkpoint = ModelCheckpoint(
        dirpath=results, filename="best", monitor=monitor, mode=mode, save_top_k=1,
        auto_insert_metric_name=False, enable_version_counter=False,
    )
    # last.ckpt after every epoch (Lightning's save_last only rewrites it when `best` improved).
    # Listed after `checkpoint`, so it holds that callback's updated state and stays trainer.checkpoint_callback.
    last = ModelCheckpoint(dirpath=results, filename="last", save_top_k=1, enable_version_counter=False)
    # StopOnNonFinite comes first, so that a diverged loss stops the epoch before any callback saves or records it
    all_callbacks: list[Callback] = [
        StopOnNonFinite(train.learning_rate, train.log_every_n_steps), checkpoint, last,
        StatusCallback(results / "status.json"), InterruptCheckpoint(results / "last.ckpt"), TrainedBatches(),
        RngState(), FrozenGarbageCollector(), TimeBudget(train.max_minutes), *callbacks]
    if stopper is not None:
        all_callbacks.append(stopper)
    interactive = sys.stderr.isatty()
    if interactive:
        all_callbacks.append(ThrottledRichProgressBar())
    logger = TensorBoardLogger(save_dir=str(results), name="tensorboard", version="", default_hp_metric=False)
    limit = train.limit_train_batches
    return pl.Trainer(
        default_root_dir=str(results),
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy="ddp" if ddp else "auto",
        precision=resolve_precision(train, accelerator),
        max_epochs=max_epochs or train.epochs,
        max_time=timedelta(minutes=train.max_minutes) if train.max_minutes else None,
        logger=logger,
        callbacks=all_callbacks,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=interactive,
        enable_model_summary=False,
        log_every_n_steps=train.log_every_n_steps,
        deterministic=train.deterministic,
        benchmark=cudnn_benchmark(train, accelerator, fixed_input_shape),
        gradient_clip_val=train.grad_clip_norm,
        gradient_clip_algorithm="norm" if train.grad_clip_norm else None,
        accumulate_grad_batches=train.accumulate_grad_batches,
        limit_train_batches=int(limit) if limit > 1 else limit,
        num_sanity_val_steps=0,
    )
