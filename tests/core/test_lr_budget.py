"""The re-plannable learning-rate schedule and the epochs plan of train.max_minutes (engine/budget.py), without training."""
from __future__ import annotations

import io
import math
from types import SimpleNamespace

import pytest
import torch

from transferkit.engine import budget
from transferkit.engine.budget import LrSchedule, TimeBudget, plan_epochs


def factors(schedule: LrSchedule, steps: range) -> list[float]:
    return [schedule(s) for s in steps]


def non_increasing(values: list[float]) -> bool:
    return all(b <= a + 1e-12 for a, b in zip(values, values[1:]))


# -- the schedule -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["cosine", "linear", "step", "constant"])
def test_without_a_re_plan_the_schedule_warms_up_then_decays_over_all_steps(kind):
    s = LrSchedule(kind, total=40, epochs=10, warmup_fraction=0.25)
    assert factors(s, range(10)) == pytest.approx([(i + 1) / 10 for i in range(10)])
    decay = {"cosine": lambda p: 0.5 * (1 + math.cos(math.pi * p)), "linear": lambda p: 1 - p,
             "step": lambda p: 0.01 if p >= 0.75 else 0.1 if p >= 0.5 else 1.0, "constant": lambda p: 1.0}[kind]
    assert factors(s, range(10, 41)) == pytest.approx([decay((i - 10) / 30) for i in range(10, 41)])
    by_epochs = LrSchedule(kind, total=40, epochs=10, warmup_epochs=2)  # 4 steps an epoch
    assert by_epochs(7) == pytest.approx(1.0) and by_epochs(3) == pytest.approx(0.5)


@pytest.mark.parametrize("new_epochs", [3, 6, 40])  # shrinks, shrinks less, grows
def test_a_re_plan_during_the_decay_keeps_the_rate_and_ends_the_decay_at_the_new_last_epoch(new_epochs):
    s = LrSchedule("cosine", total=40, epochs=10, warmup_epochs=1)  # 4 steps an epoch
    before = factors(s, range(9))
    at = s(8)
    s.replan(8, new_epochs)
    assert s(8) == pytest.approx(at)  # no jump either way
    after = factors(s, range(8, new_epochs * 4 + 1))
    assert after[-1] == pytest.approx(0.0, abs=1e-12) and after[0] == pytest.approx(at)
    assert non_increasing(before[4:] + after)
    assert (s.epochs, s.total) == (new_epochs, new_epochs * 4)


def test_a_re_plan_during_a_fractional_warm_up_ramps_on_to_the_peak_then_decays_to_the_new_end():
    # 1000 epochs of 4 steps warm up over 100 epochs; after one epoch only 5 epochs fit: 10 % of them (2 steps) is
    # already past, so the ramp goes on from its 1 % over 10 % of the 16 steps left, then the cosine ends at step 20
    s = LrSchedule("cosine", total=4000, epochs=1000, warmup_fraction=0.1)
    at = s(4)
    assert at == pytest.approx(5 / 400)
    s.replan(4, 5)
    ramp = factors(s, range(4, 7))
    assert ramp[0] == pytest.approx(at) and ramp[-1] == pytest.approx(1.0)
    assert all(b > a for a, b in zip(ramp, ramp[1:]))
    decay = factors(s, range(6, 21))
    assert non_increasing(decay) and decay[-1] == pytest.approx(0.0, abs=1e-12)
    # a warm-up whose new end is still ahead keeps it: 10 % of 50 epochs is 5 epochs = 20 steps
    t = LrSchedule("linear", total=4000, epochs=1000, warmup_fraction=0.1)
    t.replan(4, 50)
    assert t(4) == pytest.approx(5 / 400) and t(19) == pytest.approx(1.0) and t(18) < 1.0
    assert t(200) == pytest.approx(0.0)


def test_the_plan_is_kept_in_the_scheduler_state_and_loads_with_weights_only():
    param = torch.nn.Parameter(torch.zeros(2))
    first = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([param], lr=1.0),
                                              LrSchedule("cosine", total=400, epochs=100, warmup_epochs=1))
    first.lr_lambdas[0].replan(8, 3)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = LrSchedule("cosine", total=400, epochs=100, warmup_epochs=1)
    second = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([param], lr=1.0), fresh)
    second.load_state_dict(state)
    assert fresh.epochs == 3 and fresh(12) == pytest.approx(0.0, abs=1e-12)
    assert factors(fresh, range(8, 13)) == pytest.approx(factors(first.lr_lambdas[0], range(8, 13)))


# -- the epochs that fit ----------------------------------------------------------------------------

def test_the_epochs_that_fit_the_budget():
    assert plan_epochs(60, 20, [20], done=1, ceiling=10) == 3
    assert plan_epochs(60, 20, [20], done=1, ceiling=2) == 2  # never more than train.epochs
    # a slow first epoch (caches filling) alone never ends the run while time is left ...
    assert plan_epochs(60, 50, [50], done=1, ceiling=10) == 2
    # ... and once later epochs are timed, they are the measure
    assert plan_epochs(60, 55, [50, 5], done=2, ceiling=10) == 3
    assert plan_epochs(100, 60, [50, 5, 5], done=3, ceiling=100) == 11
    # an epoch that nearly fits counts (max_time cuts the last few percent); one that does not, not
    assert plan_epochs(60, 40.5, [20, 20.5], done=2, ceiling=10) == 3
    assert plan_epochs(60, 45, [20, 25], done=2, ceiling=10) == 2
    assert plan_epochs(60, 70, [30, 40], done=2, ceiling=10) == 2  # over budget: the epochs done


class FakeStrategy:
    """DDP's broadcast: every rank receives rank zero's object (`rank_zero_value`; None on rank zero itself)."""

    def __init__(self, rank_zero_value=None):
        self.rank_zero_value = rank_zero_value
        self.calls = 0

    def broadcast(self, obj, src: int = 0):
        self.calls += 1
        return obj if self.rank_zero_value is None else self.rank_zero_value


class FakeTrainer:
    """What TimeBudget reads of a Lightning Trainer on one of two DDP ranks, after the first epoch (4 steps)."""

    def __init__(self, rank: int, strategy: FakeStrategy, schedule: LrSchedule):
        self.world_size, self.global_rank, self.is_global_zero = 2, rank, rank == 0
        self.strategy = strategy
        self.fit_loop = SimpleNamespace(max_epochs=10)
        self.current_epoch, self.global_step, self.sanity_checking = 0, 4, False
        self.lr_scheduler_configs = [SimpleNamespace(scheduler=SimpleNamespace(lr_lambdas=[schedule]))]

    @property
    def max_epochs(self) -> int:
        return self.fit_loop.max_epochs


def test_every_ddp_rank_plans_from_rank_zeros_times(monkeypatch):
    # Rank zero timed its first epoch at 20 s of a 60 s budget; rank one's own clock says 35 s. Both use rank
    # zero's times, so both stop after 3 epochs with the same rates.
    results = []
    for rank, clock in ((0, 20.0), (1, 35.0)):
        strategy = FakeStrategy(rank_zero_value=None if rank == 0 else (20.0, [20.0]))
        schedule = LrSchedule("cosine", total=40, epochs=10)
        trainer = FakeTrainer(rank, strategy, schedule)
        cb = TimeBudget(max_minutes=1)
        monkeypatch.setattr(budget, "_now", lambda: 0.0)
        cb.on_train_start(trainer, None)
        monkeypatch.setattr(budget, "_now", lambda c=clock: c)
        cb.on_train_epoch_end(trainer, None)
        assert strategy.calls == 1
        results.append((trainer.max_epochs, cb.epoch_seconds, cb.state_dict()["elapsed_s"],
                        [schedule(s) for s in range(4, 13)]))
    assert results[0][:2] == results[1][:2] and results[0][3] == results[1][3]
    assert results[0][0] == 3 and results[0][1] == [20.0]
    assert results[0][3][-1] == pytest.approx(0.0, abs=1e-12)


def test_without_a_budget_nothing_is_planned_or_shared(monkeypatch):
    strategy = FakeStrategy()
    schedule = LrSchedule("cosine", total=40, epochs=10)
    trainer = FakeTrainer(0, strategy, schedule)
    cb = TimeBudget(max_minutes=None)
    cb.on_train_start(trainer, None)
    cb.on_train_epoch_end(trainer, None)
    assert trainer.max_epochs == 10 and schedule.epochs == 10 and strategy.calls == 0 and cb.state_dict() == {}


def test_a_run_resumed_for_more_epochs_follows_the_schedule_planned_over_them():
    # One epoch of 4 steps, its cosine ended at rate 0; resumed with train.epochs=2, the rate goes back up to where
    # a 2-epoch schedule is after 4 steps, and ends at 0 after 8
    schedule = LrSchedule("cosine", total=4, epochs=1)
    trainer = FakeTrainer(0, FakeStrategy(), schedule)
    trainer.fit_loop.max_epochs = 2
    TimeBudget(max_minutes=None).on_train_start(trainer, None)
    assert schedule.epochs == 2 and schedule(4) == pytest.approx(0.5) and schedule(8) == pytest.approx(0.0, abs=1e-12)
