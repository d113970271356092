"""Knowledge distillation for retraining a pruned network (Hinton et al. 2015).

The student (the pruned network) learns from the labels and from the softened outputs of a teacher
(usually the unpruned network it was pruned from):

    loss = (1 - alpha) * CE(student, labels) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

The T^2 factor keeps the KD term's gradients on the same scale as the cross-entropy's whatever T is.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError, SpecError

if TYPE_CHECKING:
    from ..engine.meta import ModelMeta
    from ..tasks.base import Task

AUTO = "auto"  # distill.teacher=auto: the checkpoint model.pruned was pruned from


class DistillLoss(NamedTuple):
    total: torch.Tensor
    ce: torch.Tensor  # cross-entropy with the labels
    kd: torch.Tensor  # T^2 * KL(teacher || student) at temperature T, mean over the batch


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, weight: float,
                      temperature: float, label_smoothing: float = 0.0) -> DistillLoss:
    """The loss above for logits of shape (batch, classes); `weight` is alpha, the KD term's share."""
    ce = F.cross_entropy(student, labels, label_smoothing=label_smoothing)
    t = temperature
    # kl_div(input=log q, target=log p, log_target=True) = sum p (log p - log q): KL(p || q), p the teacher's
    kd = F.kl_div(F.log_softmax(student.float() / t, dim=1), F.log_softmax(teacher.float() / t, dim=1),
                  reduction="batchmean", log_target=True) * (t * t)
    return DistillLoss((1.0 - weight) * ce + weight * kd, ce, kd)


def resolve_teacher(teacher: str, pruned: str | None) -> Path:
    """The teacher checkpoint `distill.teacher` names; `auto` = the `pruned_from` of `model.pruned`."""
    from ..engine.checkpoint import read_checkpoint

    if teacher != AUTO:
        path = Path(teacher).expanduser()
        if not path.is_file():
            raise SpecError(f"distill.teacher: file {path} does not exist; give the unpruned model's best.ckpt "
                            "(or distill.teacher=auto with model.pruned)")
        return path
    if not pruned:
        raise SpecError("distill.teacher=auto means the model model.pruned was pruned from, but model.pruned is not "
                        "set; give distill.teacher=PATH to a best.ckpt, or retrain a pruned model")
    meta, _ = read_checkpoint(pruned)
    source = meta.history.get("pruned_from")
    if not source:
        raise SpecError(f"distill.teacher=auto: {pruned} does not record which model it was pruned from; "
                        "give distill.teacher=PATH to the unpruned best.ckpt")
    path = Path(source).expanduser()
    if not path.is_file():
        raise SpecError(f"distill.teacher=auto: {pruned} was pruned from {source}, which does not exist (from "
                        f"{Path.cwd()}); give distill.teacher=PATH to that checkpoint")
    return path


def load_teacher(task: "Task", path: Path, student: "ModelMeta") -> nn.Module:
    """The teacher network of checkpoint `path`, frozen and in eval mode; its classes must be the student's."""
    from ..engine.checkpoint import read_checkpoint

    if path.suffix.lower() == ".onnx":
        raise SpecError(f"distill.teacher: {path} is an ONNX file; give the PyTorch checkpoint (best.ckpt)")
    try:
        meta, state = read_checkpoint(path, task=task.name)
    except ModelError as e:
        raise SpecError(f"distill.teacher: {e}") from None
    if list(meta.classes) != list(student.classes):
        raise SpecError(f"distill.teacher: {path} predicts classes {list(meta.classes)}, the student "
                        f"{list(student.classes)}; the teacher needs the same classes in the same order")
    net = task.load_net(meta, state, path).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
