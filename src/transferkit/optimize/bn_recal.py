"""BatchNorm re-estimation after pruning (the "adaptive BN" step of EagleEye, Li et al. 2020).

Removing channels changes what every later layer receives, so the running mean and variance its
BatchNorm layers learned during training no longer describe their inputs: in eval mode a pruned
network normalises with stale statistics and is often near chance. Running a few batches of
training data through it with the BatchNorm layers in train mode, their running statistics reset
and averaged cumulatively (momentum=None), and no gradients, gives them statistics of the network
as it now is. Only buffers change; no weight is touched.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@dataclass
class Recalibration:
    bn_layers: int  # BatchNorm layers whose running statistics were re-estimated
    batches: int  # batches run through the network
    items: int  # images (or other items) in those batches


def batchnorm_layers(net: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers (1d/2d/3d, SyncBatchNorm) that keep running statistics."""
    return [m for m in net.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(net: nn.Module, batches: Iterable[tuple[torch.Tensor, ...]], max_batches: int) -> Recalibration:
    """Re-estimate the running statistics of every BatchNorm in `net` from up to `max_batches` of `batches`
    (each a tuple of model inputs, on the net's device); the net is left in eval mode.

    Every other layer (dropout included) runs as in eval mode. A net without BatchNorm is left as it is,
    and so are the statistics when not one batch (of two or more items) came.
    """
    layers = batchnorm_layers(net)
    if not layers or max_batches <= 0:
        net.eval()
        return Recalibration(len(layers), 0, 0)
    momenta = [m.momentum for m in layers]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in layers]
    net.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts the same
        m.train()
    done = items = 0
    try:
        for inputs in batches:
            if done >= max_batches:
                break
            if len(inputs[0]) < 2:  # train-mode BatchNorm cannot normalise a batch of one
                continue
            net(*inputs)
            done += 1
            items += len(inputs[0])
    finally:
        for m, momentum, (mean, var, count) in zip(layers, momenta, saved):
            m.momentum = momentum
            if done == 0:  # nothing ran (no usable batch, or an error): the old statistics beat the reset ones
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
        net.eval()
    return Recalibration(len(layers), done, items)
