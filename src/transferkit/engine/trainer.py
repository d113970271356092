"""Lightning Trainer factory and the callbacks every task's training shares."""
from __future__ import annotations

import gc
import json
import logging
import math
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

from ..io import atomic_write_text
from ..spec import TrainConfig
from .checkpoint import AtomicCheckpointIO
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
        metrics = {k: _number(v) for k, v in trainer.callback_metrics.items() if not k.endswith("_step")}
        record = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            **{k.removesuffix("_epoch"): v for k, v in sorted(metrics.items())},
            "epoch_time_s": round(time.time() - self.epoch_start, 3),
            "elapsed_s": round(time.time() - self.start, 3),
        }
        opt = trainer.optimizers[0] if trainer.optimizers else None
        if opt is not None:
            record["lr"] = opt.param_groups[0]["lr"]
        self.lines.append(json.dumps(record))
        atomic_write_text(self.path, "\n".join(self.lines) + "\n")
        shown = ", ".join(f"{k}={v:.4g}" for k, v in record.items()
                          if isinstance(v, float) and k not in ("epoch_time_s", "elapsed_s", "lr"))
        log.info("epoch %d/%d step %d: %s (%.1fs)", trainer.current_epoch + 1, trainer.max_epochs,
                 trainer.global_step, shown, record["epoch_time_s"])


class InterruptCheckpoint(Callback):
    """On Ctrl-C (SIGINT) save `last.ckpt` so `train.resume=true` continues from where it stopped."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.interrupted = False

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.interrupted = True
            trainer.save_checkpoint(self.path)


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


def resolve_precision(train: TrainConfig, accelerator: str) -> str:
    if train.precision == "16-mixed" and accelerator == "cpu":
        log.warning("train.precision=16-mixed needs a GPU; using bf16-mixed on the CPU")
        return "bf16-mixed"
    return train.precision


def resolve_accelerator(train: TrainConfig) -> str:
    if train.accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if train.accelerator == "gpu" and not torch.cuda.is_available():
        from ..errors import SpecError

        raise SpecError("train.accelerator=gpu (or --gpus) but no CUDA GPU is visible; use train.accelerator=cpu")
    return train.accelerator


def quiet_lightning() -> None:
    """Keep the terminal for what the user asked about: Lightning's banners and tips go to log.txt only."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (".*Checkpoint directory .* exists and is not empty.*", ".*isinstance\\(treespec, LeafSpec\\).*",
                    ".*was configured so 100% of the batches.*", ".*does not have many workers.*",
                    ".*litlogger.*", ".*The number of training batches .* is smaller than the logging interval.*"):
        warnings.filterwarnings("ignore", message=pattern)


def build_trainer(
    train: TrainConfig,
    results: Path,
    monitor: str,
    mode: str,
    callbacks: list[Callback] = (),
    max_epochs: int | None = None,
) -> pl.Trainer:
    quiet_lightning()
    accelerator = resolve_accelerator(train)
    ddp = train.num_devices > 1 or train.num_nodes > 1
    checkpoint = ModelCheckpoint(
        dirpath=results, filename="best", monitor=monitor, mode=mode, save_top_k=1,
        auto_insert_metric_name=False, enable_version_counter=False,
    )
    # last.ckpt after every epoch (Lightning's save_last only rewrites it when `best` improved).
    # Listed after `checkpoint`, so it holds that callback's updated state and stays trainer.checkpoint_callback.
    last = ModelCheckpoint(dirpath=results, filename="last", save_top_k=1, enable_version_counter=False)
    all_callbacks: list[Callback] = [checkpoint, last, StatusCallback(results / "status.json"),
                                     InterruptCheckpoint(results / "last.ckpt"), RngState(), FrozenGarbageCollector(),
                                     *callbacks]
    if train.early_stopping_patience:
        all_callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=train.early_stopping_patience))
    interactive = sys.stderr.isatty()
    if interactive:
        all_callbacks.append(ThrottledRichProgressBar())
    logger = TensorBoardLogger(save_dir=str(results), name="tensorboard", version="", default_hp_metric=False)
    limit = train.limit_train_batches
    return pl.Trainer(
        default_root_dir=str(results),
        accelerator=accelerator,
        devices=train.num_devices,
        num_nodes=train.num_nodes,
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
        # cuDNN picks the fastest convolution algorithm per input shape once; training batches have one shape
        benchmark=accelerator == "gpu" and not train.deterministic,
        limit_train_batches=int(limit) if limit > 1 else limit,
        num_sanity_val_steps=0,
    )
