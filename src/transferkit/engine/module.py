"""The LightningModule base every task extends: optimiser, schedule, checkpoint metadata, histograms."""
from __future__ import annotations

import io
import logging
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from ..data.items import parse_skipped
from ..spec import TrainConfig
from .budget import LrSchedule
from .checkpoint import META_KEY
from .meta import ModelMeta

log = logging.getLogger("transferkit")


def learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """{"lr": the schedule's current rate (train.learning_rate x schedule), "lr_<group>": each named group's rate}."""
    groups = optimizer.param_groups
    rates = {"lr": groups[0]["lr"] / groups[0].get("lr_scale", 1.0)}
    for group in groups:
        if "name" in group:
            rates.setdefault(f"lr_{group['name']}", group["lr"])
    return rates


def write_histogram(writer, tag: str, values: torch.Tensor, step: int, bins: int = 64) -> None:
    """One TensorBoard histogram of `values`, in 64 equal-width bins, computed where the tensor lives.

    SummaryWriter.add_histogram's default binning (about 1500 exponential edges, each value searched
    among them) plus its BLAS dot product took 0.2 s per epoch for MobileNetV2's weights on an idle
    2-core CPU and up to 0.8 s on a busy one -- several percent of a few-hundred-image epoch. Equal-width
    bins by `torch.histc` take ~0.05 s for MobileNetV2 and ~0.1 s for ResNet-18 on that CPU, and on a GPU
    the weights are binned there and only the 64 counts and 4 sums cross to the host (numpy on the host
    spent ~0.1 s of every ResNet-18 epoch on copying and binning). TensorBoard re-bins to equal widths for
    display anyway. Non-finite values are left out.
    """
    v = values.detach().flatten().float()
    finite = torch.isfinite(v)
    if not bool(finite.all()):
        v = v[finite]
    if v.numel() == 0:
        return
    lo, hi = (float(x) for x in torch.aminmax(v))
    lo_edge, hi_edge = (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)  # numpy's rule for a constant tensor
    counts = torch.histc(v, bins=bins, min=lo_edge, max=hi_edge)
    total, squares = (float(x) for x in torch.stack([v.sum(dtype=torch.float64), torch.dot(v, v).double()]))
    edges = torch.linspace(lo_edge, hi_edge, bins + 1, dtype=torch.float64)
    writer.add_histogram_raw(tag, min=lo, max=hi, num=int(v.numel()), sum=total, sum_squares=squares,
                             bucket_limits=edges[1:].tolist(), bucket_counts=counts.long().tolist(), global_step=step)


def write_image(writer, tag: str, image, step: int) -> None:
    """A PIL image into TensorBoard, PNG-encoded at zlib level 1.

    SummaryWriter.add_image converts to float and back and encodes at PNG's default level 6, about
    5x slower for a 4x3 grid of 128 px cells (70 ms against 16 ms on a busy 2-core CPU) for a file
    5% smaller; this runs every validation epoch. The picture itself is the same.
    """
    from tensorboard.compat.proto.summary_pb2 import Summary

    image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    encoded = Summary.Image(height=image.height, width=image.width, colorspace=3,
                            encoded_image_string=buffer.getvalue())
    file_writer = getattr(writer, "_get_file_writer", None)
    if file_writer is None:  # not torch's SummaryWriter: use its public call
        writer.add_image(tag, np.asarray(image), step, dataformats="HWC")
        return
    file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=encoded)]), step)


class TaskModule(pl.LightningModule):
    """A task's network (`self.net`: the inputs its ModelMeta declares -> raw outputs; the thing pruned
    and exported) plus its training logic. Subclasses write training_step / validation_step."""

    def __init__(self, net: nn.Module, meta: ModelMeta, train: TrainConfig):
        super().__init__()
        self.net = net
        self.meta = meta  # saved into every checkpoint (on_save_checkpoint)
        self.train_cfg = train
        self.bad_files: dict[str, str] = {}  # items that failed to load during training, where -> reason

    def on_train_start(self) -> None:
        # Proof, in metrics.json, of which DDP ranks actually trained (a single process reports [0]).
        ranks = self.all_gather(torch.tensor([self.global_rank], device=self.device))
        self.ranks_seen = sorted({int(r) for r in ranks.flatten().tolist()})

    def forward(self, *inputs: torch.Tensor) -> Any:
        return self.net(*inputs)

    def note_skipped(self, entries: list[str]) -> None:
        self.bad_files.update(parse_skipped(entries))

    # -- optimisation -------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The trainable parameters by name of group; "backbone" learns at learning_rate x train.backbone_lr_scale.

        Default: what lies under `self.net.backbone` (when the net has one) is "backbone", the rest "head".
        A task whose pretrained part is elsewhere overrides this; every trainable parameter must be in one group.
        """
        backbone = getattr(self.net, "backbone", None)
        inside = {id(p) for p in backbone.parameters()} if isinstance(backbone, nn.Module) else set()
        groups: dict[str, list[nn.Parameter]] = {"backbone": [], "head": []}
        for p in self.parameters():
            if p.requires_grad:
                groups["backbone" if id(p) in inside else "head"].append(p)
        return {name: params for name, params in groups.items() if params}

    def _optimizer_groups(self) -> list[dict[str, Any]]:
        """parameter_groups() as torch param groups: each named group split into decayed weights and
        undecayed biases / norm scales, carrying its name and its learning-rate scale."""
        cfg = self.train_cfg
        named = self.parameter_groups()
        trainable = {id(p) for p in self.parameters() if p.requires_grad}
        listed = [id(p) for params in named.values() for p in params]
        if len(listed) != len(set(listed)) or set(listed) != trainable:
            raise ValueError(f"{type(self).__name__}.parameter_groups() must list every trainable parameter exactly "
                             f"once ({len(trainable)} trainable, {len(listed)} listed, {len(set(listed))} distinct)")
        if cfg.backbone_lr_scale != 1.0 and not named.get("backbone"):
            log.warning("train.backbone_lr_scale=%s has no effect: this model has no trainable backbone parameters "
                        "(frozen, or the network has no backbone); every parameter learns at train.learning_rate",
                        cfg.backbone_lr_scale)
        groups = []
        for name, params in named.items():
            scale = cfg.backbone_lr_scale if name == "backbone" else 1.0
            decay = [p for p in params if p.ndim > 1]
            no_decay = [p for p in params if p.ndim <= 1]  # biases and norm scales are not decayed
            for members, weight_decay in ((decay, cfg.weight_decay), (no_decay, 0.0)):
                if members:
                    groups.append({"params": members, "name": name, "lr_scale": scale,
                                   "lr": cfg.learning_rate * scale, "weight_decay": weight_decay})
        return groups

    def configure_optimizers(self):
        cfg = self.train_cfg
        groups = self._optimizer_groups()
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD(groups, lr=cfg.learning_rate, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
        elif cfg.optimizer == "adam":
            opt = torch.optim.Adam(groups, lr=cfg.learning_rate)
        else:
            opt = torch.optim.AdamW(groups, lr=cfg.learning_rate)
        # Optimizer steps, not batches: Lightning's estimate divides the batches by train.accumulate_grad_batches,
        # and the scheduler below is stepped once per optimizer step, so warm-up and decay count the same unit.
        # Planned over the trainer's max epochs (train.epochs); under train.max_minutes, TimeBudget re-plans it to
        # the epochs that fit the budget once the first epoch is timed.
        total = max(1, int(self.trainer.estimated_stepping_batches))
        factor = LrSchedule(cfg.lr_scheduler, total, max(1, self.trainer.max_epochs), cfg.warmup_fraction,
                            cfg.warmup_epochs)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)  # one factor, applied to each group's own rate
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- checkpoints ----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[META_KEY] = self.meta.to_dict()

    # -- TensorBoard ----------------------------------------------------------------------------
    def on_train_epoch_end(self) -> None:
        optimizers = self.trainer.optimizers if self.trainer is not None else []
        if optimizers:
            for key, lr in learning_rates(optimizers[0]).items():
                self.log(f"train/{key}", lr, rank_zero_only=True)
        if not self.train_cfg.histograms or self.trainer.sanity_checking:
            return
        writer = self.tensorboard
        if writer is None:
            return
        for name, param in self.net.named_parameters():
            if param.ndim > 1:  # conv and linear weights; norms and biases add noise, not insight
                write_histogram(writer, f"weights/{name}", param, self.current_epoch)

    @property
    def tensorboard(self):
        """The SummaryWriter, on rank zero only (None elsewhere or without a TensorBoard logger)."""
        if self.trainer is None or self.trainer.global_rank != 0 or self.logger is None:
            return None
        return getattr(self.logger, "experiment", None)
