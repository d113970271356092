"""A pruned network that recovers: BatchNorm re-estimation in `prune`, knowledge distillation in `train`."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from transferkit.cli import main
from transferkit.errors import SpecError
from transferkit.optimize import PruneConfig, prune_model
from transferkit.optimize.bn_recal import recalibrate_batchnorm
from transferkit.optimize.distill import distillation_loss, resolve_teacher

FAST = ["data.image_size=32", "train.batch_size=8", "train.num_workers=0", "train.epochs=1",
        "train.histograms=false", "evaluation.batch_size=16", "model.pretrained=false"]


def tkit(*args) -> int:
    return main([str(a) for a in args])


# -- BatchNorm re-estimation on a toy network -------------------------------------------------------------

def toy_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 4))


def images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 12, 12, generator=torch.Generator().manual_seed(seed)) * 2 + 1


def trained_and_pruned_toy() -> nn.Sequential:
    """Running statistics learned on the data, then half the channels of every group removed."""
    net = toy_net().train()
    with torch.no_grad():
        for seed in range(20):
            net(images(16, seed))
    net.eval()
    prune_model(net, images(1, 99), PruneConfig(ratio=0.5, granularity=1, min_num_filters=1), ignored_layers=[net[8]])
    assert net[3].in_channels == 16 and net[4].num_features == 16
    return net


def eval_train_gap(net: nn.Module, x: torch.Tensor) -> float:
    """How far eval-mode outputs (running statistics) are from train-mode ones (the batch's own statistics)."""
    with torch.no_grad():
        batch_stats = copy.deepcopy(net).train()(x)
        return float((net.eval()(x) - batch_stats).abs().mean())


def test_bn_recalibration_refreshes_running_stats_of_a_pruned_net():
    net = trained_and_pruned_toy()
    probe = images(64, 1000)
    before_stats = net[4].running_mean.clone()
    before_gap = eval_train_gap(net, probe)
    done = recalibrate_batchnorm(net, ((images(32, 100 + i),) for i in range(50)), max_batches=8)
    assert (done.bn_layers, done.batches, done.items) == (2, 8, 256)
    assert not net.training and all(not m.training for m in net.modules())
    assert net[4].momentum == 0.1  # restored after the cumulative average
    assert not torch.allclose(net[4].running_mean, before_stats)
    assert eval_train_gap(net, probe) < 0.5 * before_gap


def test_zero_batches_or_no_usable_batch_leave_running_stats_unchanged():
    net = trained_and_pruned_toy()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    assert recalibrate_batchnorm(net, iter([(images(32, 5),)]), max_batches=0).batches == 0
    assert recalibrate_batchnorm(net, iter([(images(1, 5),)]), max_batches=4).batches == 0  # one item: unusable
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())


def test_a_net_without_batchnorm_is_left_alone():
    net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    before = copy.deepcopy(net.state_dict())
    assert recalibrate_batchnorm(net, iter([(torch.randn(8, 4),)]), 5).bn_layers == 0
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


# -- the distillation loss -----------------------------------------------------------------------------------

def test_distillation_loss_is_the_formula():
    student = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    teacher = torch.tensor([[1.0, 1.5, -2.0], [0.0, -1.0, 2.0]])
    labels = torch.tensor([0, 2])
    alpha, t = 0.3, 4.0
    ce = sum(-math.log(math.exp(s[y]) / sum(math.exp(v) for v in s)) for s, y in zip(student.tolist(), labels.tolist())) / 2
    kl = 0.0
    for s, q in zip(student.tolist(), teacher.tolist()):
        p_t = [math.exp(v / t) / sum(math.exp(w / t) for w in q) for v in q]
        p_s = [math.exp(v / t) / sum(math.exp(w / t) for w in s) for v in s]
        kl += sum(a * math.log(a / b) for a, b in zip(p_t, p_s))
    kd = t * t * kl / 2
    out = distillation_loss(student, teacher, labels, alpha, t)
    assert out.ce.item() == pytest.approx(ce, rel=1e-5)
    assert out.kd.item() == pytest.approx(kd, rel=1e-5)
    assert out.total.item() == pytest.approx((1 - alpha) * ce + alpha * kd, rel=1e-5)
    assert distillation_loss(student, student, labels, 1.0, t).total.item() == pytest.approx(0.0, abs=1e-6)


# -- through the CLI ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("kd") / "cls"
    assert tkit("classification", "train", "-r", run, *data, *FAST) == 0
    return run / "best.ckpt"


@pytest.fixture(scope="module")
def pruned(trained, data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kd") / "prune"
    assert tkit("classification", "prune", "-r", out, "-m", trained, *data, *FAST, "prune.ratio=0.5",
                "prune.evaluate=true") == 0
    return out


def bn_buffers(ckpt: Path, which: str) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.endswith(which)}


def test_prune_reestimates_batchnorm_by_default_and_reports_it(pruned, trained):
    report = json.loads((pruned / "prune_report.json").read_text())
    recal = report["bn_recalibration"]
    assert recal["done"] and recal["bn_layers"] > 10
    assert recal["batches"] == 5 and recal["images"] == 40  # 40 training images, train.batch_size=8: one pass
    assert 0.0 <= report["val_after_prune"]["top1"] <= 1.0
    assert 0.0 <= report["val_after_recalibration"]["top1"] <= 1.0
    # the re-estimated statistics are new numbers, not the kept channels' old ones
    old, new = bn_buffers(trained, "running_mean"), bn_buffers(pruned / "pruned.ckpt", "running_mean")
    assert sum(not set(new[k].tolist()) <= set(old[k].tolist()) for k in new) > 10


def test_zero_recalibration_batches_keep_the_trained_statistics(trained, data, tmp_path):
    out = tmp_path / "prune0"
    assert tkit("classification", "prune", "-r", out, "-m", trained, *data, *FAST, "prune.ratio=0.5",
                "prune.bn_recalibration_batches=0") == 0
    report = json.loads((out / "prune_report.json").read_text())
    assert report["bn_recalibration"] == {"done": False, "reason": "prune.bn_recalibration_batches=0"}
    assert "val_after_prune" not in report
    old = bn_buffers(trained, "running_mean")
    for name, kept in bn_buffers(out / "pruned.ckpt", "running_mean").items():  # each a subset of the trained values
        assert set(kept.tolist()) <= set(old[name].tolist()), name


def test_prune_without_training_data_skips_by_default_and_refuses_when_asked(trained, digits, tmp_path, capsys):
    val_only = [f"data.val_dir={digits / 'val'}"]
    assert tkit("classification", "prune", "-r", tmp_path / "p", "-m", trained, *FAST, *val_only,
                "prune.ratio=0.5") == 0
    report = json.loads((tmp_path / "p" / "prune_report.json").read_text())
    assert report["bn_recalibration"]["done"] is False and "training" in report["bn_recalibration"]["reason"]
    capsys.readouterr()
    assert tkit("classification", "prune", "-r", tmp_path / "q", "-m", trained, *FAST, *val_only,
                "prune.ratio=0.5", "prune.bn_recalibration_batches=4") == 2
    err = capsys.readouterr().err
    assert "prune.bn_recalibration_batches=4 needs training images" in err and "Traceback" not in err


def test_teacher_auto_is_the_model_that_was_pruned(pruned, trained):
    assert resolve_teacher("auto", str(pruned / "pruned.ckpt")) == trained


def test_retrain_with_distillation_logs_both_loss_terms(pruned, data, tmp_path):
    run = tmp_path / "retrain"
    assert tkit("classification", "train", "-r", run, *data, *FAST, f"model.pruned={pruned / 'pruned.ckpt'}",
                "distill.teacher=auto", "distill.weight=0.7") == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(run / "tensorboard")).Reload().Tags()["scalars"]
    assert {"train/loss_kd", "train/loss_ce"} <= set(scalars)
    ckpt = torch.load(run / "best.ckpt", weights_only=True)
    assert not any("teacher" in k for k in ckpt["state_dict"])  # the teacher is not part of the student
    assert ckpt["transferkit"]["history"]["distill"]["weight"] == 0.7


def test_distillation_errors(pruned, trained, data, tmp_path, capsys):
    args = ["classification", "train", "-r", tmp_path / "r", *data, *FAST]
    assert tkit(*args, f"distill.teacher={tmp_path / 'missing.ckpt'}") == 2
    err = capsys.readouterr().err
    assert "distill.teacher" in err and "missing.ckpt" in err and "Traceback" not in err
    assert tkit(*args, "distill.teacher=auto") == 2
    assert "model.pruned is not set" in capsys.readouterr().err
    assert tkit(*args, f"distill.teacher={trained}", "distill.weight=1.5") == 2
    assert "distill.weight" in capsys.readouterr().err
    # a teacher whose classes come in another order
    ckpt = torch.load(trained, weights_only=True)
    ckpt["transferkit"]["classes"] = list(reversed(ckpt["transferkit"]["classes"]))
    torch.save(ckpt, tmp_path / "reordered.ckpt")
    with pytest.raises(SpecError, match="same classes in the same order"):
        from transferkit import api

        api.train("classification", None, tmp_path / "r2", [*data, *FAST, f"model.pruned={pruned / 'pruned.ckpt'}",
                                                          f"distill.teacher={tmp_path / 'reordered.ckpt'}"])


def test_tasks_without_distillation_refuse_the_section(tmp_path, capsys):
    assert tkit("detectnet_v2", "train", "-r", tmp_path / "d", "distill.teacher=auto") == 2
    assert "distillation is supported by classification only" in capsys.readouterr().err
