"""The learning-rate schedule as a re-plannable object, and `train.max_minutes` re-planning it to the epochs that fit.

A time budget with a large `train.epochs` as a ceiling would otherwise plan warm-up and decay over epochs the run
never reaches. `TimeBudget` measures the epochs (validation included) and, from the first epoch on, sets the
trainer's max epochs to those that fit and re-plans `LrSchedule` to end there; Lightning's `max_time` stays the
safety net for an epoch slower than the measured ones.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Sequence

from lightning.pytorch.callbacks import Callback

log = logging.getLogger("transferkit")

_now = time.monotonic  # the clock the budget reads (tests replace it)

# An epoch counts as fitting when 90 % of it fits: epoch times vary by a few percent, and an epoch that max_time
# cuts near its end still validates (Lightning validates when training is stopped) with the rate near its end value.
FIT_TOLERANCE = 0.1


class LrSchedule:
    """The factor on each group's learning rate after `step` optimizer steps: linear warm-up to 1, then the decay
    of `kind` (cosine, linear, step, constant) reaching its end at `total` steps.

    `replan` moves the end (and a warm-up given as a fraction of all steps) without a jump: the factor keeps its
    value at the re-plan, and what is left of the warm-up and of the decay is spread over the new remaining steps.
    A plan that shrinks makes the decay steeper from then on; one that grows makes it flatter; the rate never goes
    back up during the decay. A re-plan during warm-up continues the ramp from the current rate to the peak at the
    new plan's warm-up end (warmup_epochs: unchanged; warmup_fraction: that fraction of the new total), or, when the
    first plan's slow ramp has left less than that, over warmup_fraction of the steps left.

    A callable object rather than a closure, so that LambdaLR's state_dict keeps its fields (plain numbers) in
    every checkpoint and a resumed run continues the same plan.
    """

    def __init__(self, kind: str, total: int, epochs: int, warmup_fraction: float = 0.0, warmup_epochs: int = 0):
        self.kind = kind
        self.epochs = max(1, epochs)
        self.steps_per_epoch = max(1, total // self.epochs)
        self.warmup_fraction = warmup_fraction
        self.warmup_epochs = warmup_epochs
        self.total = max(1, total)
        self.warmup_end = self._warmup_steps(self.total)
        # The warm-up line runs from (warm_step, warm_value) to (warmup_end - 1, 1): at first from (-1, 0)
        self.warm_step, self.warm_value = -1, 0.0
        # The decay's progress runs from (decay_step, decay_progress) to (total, 1); None: from (warmup_end, 0)
        self.decay_step: int | None = None
        self.decay_progress = 0.0

    def _warmup_steps(self, total: int) -> int:
        if self.warmup_fraction:
            return round(self.warmup_fraction * total)
        return self.warmup_epochs * self.steps_per_epoch

    def progress(self, step: int) -> float:
        """How far the decay has got after `step` steps, 0 (peak) to 1 (end); 0 during warm-up."""
        if step < self.warmup_end:
            return 0.0
        start, p0 = (self.warmup_end, 0.0) if self.decay_step is None else (self.decay_step, self.decay_progress)
        return min(1.0, max(p0, p0 + (1 - p0) * (step - start) / max(1, self.total - start)))

    def __call__(self, step: int) -> float:
        if step < self.warmup_end:
            span = self.warmup_end - 1 - self.warm_step
            return 1.0 if span <= 0 else self.warm_value + (1 - self.warm_value) * (step - self.warm_step) / span
        progress = self.progress(step)
        if self.kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if self.kind == "linear":
            return 1.0 - progress
        if self.kind == "step":
            return 0.01 if progress >= 0.75 else 0.1 if progress >= 0.5 else 1.0
        return 1.0

    def reset(self, epochs: int) -> None:
        """Plan over `epochs` as if from the start of training (a resumed run that trains for more or fewer epochs
        than it was planned for: the rate follows the new plan, going back up if the old one had ended)."""
        self.__init__(self.kind, max(1, epochs) * self.steps_per_epoch, epochs, self.warmup_fraction,
                      self.warmup_epochs)

    def replan(self, step: int, epochs: int) -> None:
        """From `step` steps done on, end the schedule after `epochs` epochs."""
        epochs = max(1, epochs)
        total = epochs * self.steps_per_epoch
        if step < self.warmup_end - 1:  # still ramping up: continue the ramp from where it is
            value = self(step)
            wanted = self._warmup_steps(total)
            self.warm_step, self.warm_value = step, value
            # The first plan's ramp may have been so slow that the new plan's warm-up end is already past: then
            # the ramp ends after warmup_fraction of the steps left, rather than jumping to the peak
            gentle = step + 1 + round(self.warmup_fraction * max(0, total - step))
            self.warmup_end = wanted if wanted > step + 1 else gentle
            self.decay_step, self.decay_progress = None, 0.0
        else:
            start = max(step, self.warmup_end)
            self.decay_step, self.decay_progress = start, self.progress(start)
        self.epochs, self.total = epochs, total


def find_schedule(trainer) -> LrSchedule | None:
    """The LrSchedule that the trainer's learning-rate scheduler applies, if any."""
    for config in getattr(trainer, "lr_scheduler_configs", None) or []:
        for fn in getattr(config.scheduler, "lr_lambdas", None) or []:
            if isinstance(fn, LrSchedule):
                return fn
    return None


def plan_epochs(budget_s: float, elapsed_s: float, epoch_seconds: Sequence[float], done: int, ceiling: int) -> int:
    """How many epochs in all the run should train: those done plus the whole epochs that fit in what is left of
    the budget, at most `ceiling` (train.epochs).

    The first epoch is the only measure until there is a second; it is often the slowest (caches filling, compiling,
    cuDNN's search), so on its own it never plans fewer than one more epoch while time is left. From the second on,
    the epoch time is the mean of the epochs after the first.
    """
    left = budget_s - elapsed_s
    later = list(epoch_seconds[1:])
    typical = later or list(epoch_seconds[:1])
    if not typical:
        return ceiling
    per = sum(typical) / len(typical)
    more = math.floor(left / per + FIT_TOLERANCE) if per > 0 else ceiling
    if not later and left > 0:
        more = max(1, more)
    return max(done, min(ceiling, done + max(0, more)))


class TimeBudget(Callback):
    """train.max_minutes: after each training epoch (its validation included), plans the epochs that fit in the
    budget and re-plans the learning-rate schedule to end with them. Every DDP rank uses rank zero's times, so all
    ranks stop at the same epoch with the same rates.

    The budget counts training time as Lightning's max_time does (from the start of training, across resumes); the
    plan and the epoch times are kept in every checkpoint. With or without a budget, a run resumed for another
    number of epochs than its schedule was planned for (another train.epochs or budget) gets the schedule planned
    over the new number from the start, as a resumed run always had.
    """

    def __init__(self, max_minutes: float | None):
        self.max_minutes = max_minutes
        self.budget_s = max_minutes * 60 if max_minutes else None
        self.epoch_seconds: list[float] = []  # each epoch's time, validation included, in the plan's order
        self.planned: int | None = None
        self.ceiling: int | None = None
        self._offset = 0.0  # training time before a resume
        self._epoch_mark = 0.0  # elapsed training time when the current epoch began
        self._started: float | None = None

    def elapsed(self) -> float:
        return self._offset + (_now() - self._started if self._started is not None else 0.0)

    # -- checkpoint state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.budget_s is None:
            return {}
        return {"planned_epochs": self.planned, "epoch_seconds": list(self.epoch_seconds),
                "elapsed_s": self.elapsed(), "epoch_mark_s": self._epoch_mark}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.planned = state.get("planned_epochs")
        self.epoch_seconds = [float(s) for s in state.get("epoch_seconds", [])]
        self._offset = float(state.get("elapsed_s", 0.0))
        self._epoch_mark = float(state.get("epoch_mark_s", self._offset))

    # -- hooks ----------------------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        self._started = _now()
        self.ceiling = trainer.max_epochs
        if self.budget_s is not None and self.epoch_seconds:  # resumed: the epochs that fit this run's budget
            self.planned = plan_epochs(self.budget_s, self.elapsed(), self.epoch_seconds, trainer.current_epoch,
                                       self.ceiling)
            trainer.fit_loop.max_epochs = self.planned
            if trainer.is_global_zero:
                log.info("%s", self._message(self.planned))
        schedule = find_schedule(trainer)  # as the checkpoint left it
        if schedule is not None and schedule.epochs != trainer.max_epochs:
            # Resumed for more or fewer epochs than the schedule was planned for (another train.epochs, or a budget
            # that now fits another number): it follows the plan over the new number, as if planned so from the start
            if trainer.is_global_zero:
                log.info("resumed at epoch %d: the learning-rate schedule is now planned over %d epochs (it was %d)",
                         trainer.current_epoch, trainer.max_epochs, schedule.epochs)
            schedule.reset(trainer.max_epochs)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.budget_s is None or trainer.sanity_checking:
            return
        elapsed = self.elapsed()
        seconds = [*self.epoch_seconds, elapsed - self._epoch_mark]
        elapsed, seconds = self.shared(trainer, (elapsed, seconds))
        self.epoch_seconds, self._epoch_mark = list(seconds), elapsed
        done = trainer.current_epoch + 1  # the epoch counter moves on after this hook
        first = self.planned is None
        self._apply(trainer, plan_epochs(self.budget_s, elapsed, seconds, done, self.ceiling), first=first)

    @staticmethod
    def shared(trainer, value: Any) -> Any:
        """Rank zero's `value` on every rank (the value itself without DDP)."""
        strategy = getattr(trainer, "strategy", None)
        if strategy is None or getattr(trainer, "world_size", 1) <= 1:
            return value
        return strategy.broadcast(value, src=0)

    def _apply(self, trainer, planned: int, first: bool) -> None:
        changed = planned != trainer.max_epochs
        self.planned = planned
        if changed:
            trainer.fit_loop.max_epochs = planned
            schedule = find_schedule(trainer)
            if schedule is not None:
                schedule.replan(trainer.global_step, planned)
        if (changed or first) and trainer.is_global_zero:
            log.info("%s", self._message(planned))

    def _message(self, planned: int) -> str:
        budget = f"train.max_minutes={self.max_minutes:g}"
        of = f"train.epochs={self.ceiling}"
        fit = f"all {of} fit" if planned >= self.ceiling else f"{planned} of {of} fit"
        later = self.epoch_seconds[1:]
        if not later:
            took = f"one epoch took {_seconds(self.epoch_seconds[0])} s" if self.epoch_seconds else "no epoch timed yet"
        else:
            took = f"epochs 2-{len(self.epoch_seconds)} took {_seconds(sum(later) / len(later))} s on average"
        return f"{budget}: {took}, so {fit}; the learning-rate schedule now ends at epoch {planned}"


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"
