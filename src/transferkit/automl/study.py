"""`tkit <task> automl`: an Optuna study whose trials are ordinary `train` runs in results/trial_NNNN.

Every worker (this process, the `automl.parallel - 1` processes it starts, and the same command run anywhere
else against the same `automl.storage`) asks the shared study for a trial, trains it through `api.train`
with the trial's values as overrides, reports the validation metric after every epoch (the pruner may stop
it), and records COMPLETE, PRUNED or FAIL with its one-line reason. The study stops taking trials at
`automl.max_trials` (counted over all workers) or `automl.max_minutes`.

Resuming is running the same command again: the study lives in its storage (by default results/study.db).
A trial left RUNNING by a worker that is gone (killed on this machine, or silent past the heartbeat's grace
period on any machine) is marked failed and enqueued again with the same values; so is a trial stopped by
Ctrl-C or SIGTERM, which end the study cleanly (exit 130 / 143).
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.callbacks import Callback

from ..engine.run import RunFolder, pid_alive
from ..errors import SpecError, Terminated, TrainingInterrupted, TransferkitError, first_line
from ..io import atomic_write_text
from ..spec import apply_overrides, load_yaml, to_yaml, validate
from .config import check_search_space, spec_baseline, spec_schema

log = logging.getLogger("transferkit")

WORKER_ENV = "TKIT_AUTOML_WORKER"  # in a worker process that `automl.parallel` started: its index (1, 2 ...)
HEARTBEAT_S = 30  # a worker's trial heartbeat; another worker fails (and retries) a trial silent for GRACE_S
GRACE_S = 180
SAME_FAILURE_STOP = 3  # this many first trials failing with one reason, none completed anywhere: a setup error


class TrialFailed(Exception):
    """A trial raised; the study records it FAIL with this one-line reason and goes on."""


class StudyStopped(Exception):
    """The trial in progress was interrupted (Ctrl-C, SIGTERM): the study ends after recording it."""


class MetricNotLogged(SpecError):
    """automl.metric names a metric the training run does not log: every trial would fail the same way."""


@dataclass
class Context:
    """What every trial of one worker shares."""

    task: Any
    spec_path: str | None
    results: Path
    overrides: list[str]
    spec: Any
    metric: str
    direction: str
    overwrite: bool
    deadline: float | None
    worker: int
    started: float = field(default_factory=time.time)
    stop: BaseException | None = None
    failures: list[str] = field(default_factory=list)
    trials_run: int = 0
    current: int | None = None  # the number of the trial this worker runs

    @property
    def cfg(self):
        return self.spec.automl


# -- the objective's view of a dimension ----------------------------------------------------------

def _plain_choices(choices: list) -> bool:
    return all(c is None or isinstance(c, (bool, int, float, str)) for c in choices)


def suggest(trial, key: str, dim: dict) -> Any:
    """The trial's value of one search dimension, as the spec takes it."""
    if "float" in dim:
        lo, hi = dim["float"]
        return trial.suggest_float(key, lo, hi, log=dim.get("log", False), step=dim.get("step"))
    if "int" in dim:
        lo, hi = dim["int"]
        return trial.suggest_int(key, lo, hi, log=dim.get("log", False), step=dim.get("step") or 1)
    choices = dim["choice"]
    if _plain_choices(choices):
        return trial.suggest_categorical(key, choices)
    return json.loads(trial.suggest_categorical(key, [json.dumps(c) for c in choices]))  # lists, mappings


def to_param(dim: dict | None, value: Any) -> Any:
    """A spec value as Optuna stores the dimension's parameter (a list choice is stored as its JSON text)."""
    if dim is not None and "choice" in dim and not _plain_choices(dim["choice"]):
        return json.dumps(value)
    return value


def from_param(dim: dict | None, value: Any) -> Any:
    if dim is not None and "choice" in dim and not _plain_choices(dim["choice"]) and isinstance(value, str):
        return json.loads(value)
    return value


def override(key: str, value: Any) -> str:
    """`key=value` as the spec's override parser reads it back to the same value (floats keep their type)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip()
    text = text.removesuffix("...").strip()
    return f"{key}={text}"


# -- the per-epoch report ---------------------------------------------------------------------------

class TrialReporter(Callback):
    """Reports the trial's validation metric to Optuna after every validation; stops training when the pruner
    says the trial is worse than the others were at that epoch."""

    def __init__(self, trial, metric: str, direction: str):
        self.trial, self.metric, self.direction = trial, metric, direction
        self.values: list[float] = []
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        logs = trainer.callback_metrics
        if self.metric not in logs:
            logged = sorted({k.removesuffix("_step").removesuffix("_epoch") for k in logs if k.startswith("val")})
            raise MetricNotLogged(f"automl.metric={self.metric!r} is not a validation metric this task logs; it logs: "
                                  f"{', '.join(logged) or 'nothing yet'}")
        value = float(logs[self.metric])
        if not math.isfinite(value):
            return
        self.values.append(value)
        self.trial.report(value, trainer.current_epoch)
        last_epoch = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        if not last_epoch and self.trial.should_prune():  # after the last epoch there is nothing left to save
            self.pruned_at = trainer.current_epoch
            trainer.should_stop = True

    def best(self) -> float | None:
        if not self.values:
            return None
        return max(self.values) if self.direction == "maximize" else min(self.values)


# -- storage and study -------------------------------------------------------------------------------

def storage_url(cfg, results: Path) -> str:
    url = cfg.storage or f"sqlite:///{(results / 'study.db').resolve()}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        try:  # SQLAlchemy's default PostgreSQL driver is psycopg2; psycopg (3) needs its name in the URL
            import psycopg2  # noqa: F401
        except ImportError:
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def shown_url(url: str) -> str:
    """The storage URL without its password, for logs and metrics.json."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: say so where it is opened
        return url.split("@")[-1]


def open_storage(url: str):
    """Optuna's RDB storage with heartbeats; tables are created on first use (retried: two workers may race)."""
    import inspect

    import optuna

    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    params = inspect.signature(optuna.storages.RDBStorage).parameters
    callback = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"
    last: Exception | None = None
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # experimental heartbeat arguments
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S,
                                                  grace_period=GRACE_S, **{callback: retry_trial})
        except ImportError as e:
            raise SpecError(f"automl.storage={shown_url(url)}: its database driver is not installed ({first_line(e)}); "
                            "for PostgreSQL: pip install 'psycopg[binary]'") from None
        except Exception as e:  # the database is unreachable, the URL is wrong, or another worker creates tables
            last = e
            time.sleep(0.5 + attempt)
    raise SpecError(f"automl.storage={shown_url(url)} cannot be opened: {first_line(last)}") from None


def retry_trial(study, trial) -> None:
    """Enqueue a failed (killed, interrupted, silent) trial again with the same values; `retry_of` marks it."""
    study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})
    log.warning("trial %d did not finish (%s); it will be run again with the same values", trial.number,
                trial.user_attrs.get("fail_reason", "its worker stopped sending heartbeats"))


def recover_local_trials(study) -> None:
    """Fail and retry the RUNNING trials of workers on this machine whose process is gone (e.g. SIGKILL)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        if trial.user_attrs.get("host") != host or not isinstance(pid, int) or pid_alive(pid):
            continue
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "fail_reason",
                                               f"its worker (process {pid}) ended without finishing it")
            if not study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:  # another worker recovered it first
            continue
        retry_trial(study, study._storage.get_trial(trial._trial_id))


def counted(trials) -> list:
    """The trials max_trials counts: all but those waiting and failed ones that were enqueued again."""
    from optuna.trial import TrialState

    retried = {t.user_attrs.get("retry_of") for t in trials if "retry_of" in t.user_attrs}
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
            or (t.state == TrialState.FAIL and t.number not in retried)]


def startup_trials(cfg) -> int:
    return cfg.startup_trials if cfg.startup_trials is not None else max(2, min(10, cfg.max_trials // 4))


def make_sampler(cfg, seed: int):
    import optuna

    n = startup_trials(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # multivariate / constant_liar are "experimental"
        if cfg.algorithm == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if cfg.sampler == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n, multivariate=True, constant_liar=True)


def make_pruner(cfg, spec):
    import optuna

    kind = cfg.pruner
    if kind == "auto":
        kind = "hyperband" if cfg.algorithm == "hyperband" else "median"
    if kind == "none":
        return optuna.pruners.NopPruner()
    if kind == "hyperband":
        searched_epochs = "train.epochs" in cfg.search_space
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto" if searched_epochs else trial_epochs(cfg, spec),
                                              reduction_factor=3)
    return optuna.pruners.MedianPruner(n_startup_trials=startup_trials(cfg), n_warmup_steps=cfg.pruner_warmup_epochs)


def trial_epochs(cfg, spec) -> int:
    """The epochs a trial is planned for when train.epochs is not searched."""
    return cfg.max_epochs or spec.train.epochs


def open_study(ctx: Context, url: str, seed_offset: int):
    import optuna

    cfg = ctx.cfg
    name = cfg.study_name or ctx.task.name
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name=name, direction=ctx.direction,
                                sampler=make_sampler(cfg, cfg.seed + seed_offset), pruner=make_pruner(cfg, ctx.spec),
                                load_if_exists=True)
    if study.direction.name.lower() != ctx.direction:
        raise SpecError(f"study '{name}' in {shown_url(url)} is to {study.direction.name.lower()}, this spec says "
                        f"automl.direction={ctx.direction}; use another automl.study_name")
    known = study.user_attrs
    if known.get("metric") not in (None, ctx.metric) or known.get("task") not in (None, ctx.task.name):
        raise SpecError(f"study '{name}' in {shown_url(url)} searches {known.get('task')} {known.get('metric')}, not "
                        f"{ctx.task.name} {ctx.metric}; use another automl.study_name or -r folder")
    if not known:
        study.set_user_attr("task", ctx.task.name)
        study.set_user_attr("metric", ctx.metric)
    return study


# -- one worker --------------------------------------------------------------------------------------

def _objective(ctx: Context):
    import optuna

    from .. import api

    space = ctx.cfg.search_space

    def objective(trial) -> float:
        ctx.current = trial.number
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("worker", ctx.worker)
        trial_dir = ctx.results / f"trial_{trial.number:04d}"
        trial.set_user_attr("dir", str(trial_dir))
        started = time.time()
        try:
            values = {key: suggest(trial, key, dim) for key, dim in space.items()}
            extra = [override(k, v) for k, v in values.items()]
            if ctx.cfg.max_epochs:
                extra.append(override("train.epochs", ctx.cfg.max_epochs))
            cut_at = None
            if ctx.deadline is not None:  # the trial running at automl.max_minutes stops there
                left = max(0.1, (ctx.deadline - time.time()) / 60)
                if ctx.spec.train.max_minutes is None or left < ctx.spec.train.max_minutes:
                    extra.append(override("train.max_minutes", round(left, 3)))
                    cut_at = ctx.deadline
            log.info("automl trial %d: %s", trial.number, ", ".join(f"{k}={_shown(v)}" for k, v in values.items()))
            reporter = TrialReporter(trial, ctx.metric, ctx.direction)
            metrics = api.train(ctx.task.name, ctx.spec_path, trial_dir, [*ctx.overrides, *extra], callbacks=[reporter],
                                overwrite=ctx.overwrite)
        except optuna.TrialPruned:
            raise
        except MetricNotLogged as e:
            trial.set_user_attr("fail_reason", first_line(e))
            raise
        except (TrainingInterrupted, KeyboardInterrupt, Terminated) as e:
            code = getattr(e, "exit_code", 143 if isinstance(e, Terminated) else 130)
            trial.set_user_attr("fail_reason", f"interrupted ({'SIGTERM' if code == 143 else 'Ctrl-C'})")
            ctx.stop = e
            raise StudyStopped() from None
        except Exception as e:  # TransferkitError, divergence, out of memory, a bad combination of values
            reason = first_line(e)
            trial.set_user_attr("fail_reason", reason)
            if not isinstance(e, TransferkitError) and trial_dir.is_dir():
                atomic_write_text(trial_dir / "error.txt", "".join(traceback.format_exception(e)))
            raise TrialFailed(reason) from None
        finally:
            trial.set_user_attr("seconds", round(time.time() - started, 2))
        value = reporter.best()
        if reporter.pruned_at is not None:
            trial.set_user_attr("pruned_at_epoch", reporter.pruned_at + 1)
            raise optuna.TrialPruned(f"worse than earlier trials at epoch {reporter.pruned_at + 1}")
        if value is None:
            reason = (f"stopped at automl.max_minutes before its first validation" if cut_at is not None
                      and time.time() >= cut_at - 1 else f"{ctx.metric} was never finite")
            trial.set_user_attr("fail_reason", reason)
            raise TrialFailed(reason)
        epochs = values.get("train.epochs", trial_epochs(ctx.cfg, ctx.spec))
        done = metrics.get("epochs_completed", epochs)
        if cut_at is not None and time.time() >= cut_at - 1 and done < epochs:  # its value is what the budget gave
            trial.set_user_attr("note", f"stopped at automl.max_minutes after {done} of {epochs} epochs")
        return value

    return objective


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def work(study, ctx: Context) -> None:
    """Run trials until the study has max_trials, the time is up, or a signal ends it."""
    from optuna.trial import TrialState

    objective = _objective(ctx)
    cfg = ctx.cfg
    while True:
        if ctx.deadline is not None and time.time() >= ctx.deadline:
            log.info("automl.max_minutes=%g reached: no more trials", cfg.max_minutes)
            return
        trials = study.get_trials(deepcopy=False)
        if len(counted(trials)) >= cfg.max_trials:
            return
        ctx.current = None
        try:
            study.optimize(objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=True)
        except StudyStopped:
            if ctx.current is not None:
                trial = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, ctx.current)
                retry_trial(study, study._storage.get_trial(trial))
            raise ctx.stop from None
        ctx.trials_run += 1
        if ctx.current is not None:
            t = study._storage.get_trial(study._storage.get_trial_id_from_study_id_trial_number(study._study_id, ctx.current))
            _log_trial(t, ctx.metric)
            if t.state == TrialState.FAIL:
                ctx.failures.append(t.user_attrs.get("fail_reason", ""))
        from .report import write_trials_csv

        write_trials_csv(study, ctx)
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        first = ctx.failures[:SAME_FAILURE_STOP]
        if (not done and len(first) == SAME_FAILURE_STOP and len(set(first)) == 1
                and len(ctx.failures) == ctx.trials_run):
            raise SpecError(f"the first {SAME_FAILURE_STOP} trials all failed with: {first[0]}; fix that and rerun the "
                            "same command (the study continues)")


def _log_trial(trial, metric: str) -> None:
    state = trial.state.name
    seconds = trial.user_attrs.get("seconds")
    if state == "COMPLETE":
        log.info("automl trial %d COMPLETE: %s=%.4g (%.1fs)", trial.number, metric, trial.value, seconds or 0)
    elif state == "PRUNED":
        log.info("automl trial %d PRUNED after epoch %s (%.1fs)", trial.number, trial.user_attrs.get("pruned_at_epoch"),
                 seconds or 0)
    else:
        log.warning("automl trial %d FAILED: %s", trial.number, trial.user_attrs.get("fail_reason", "?"))


# -- workers on this machine ---------------------------------------------------------------------------

def start_workers(ctx: Context, argv: list[str], count: int) -> list[subprocess.Popen]:
    """`count` more worker processes running the same command (automl.parallel=1), each with its own GPU when
    there are several; their output goes to results/worker_K.log."""
    import torch

    procs = []
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for k in range(1, count + 1):
        env = {**os.environ, WORKER_ENV: str(k)}
        if gpus > 1 and "CUDA_VISIBLE_DEVICES" not in os.environ:
            env["CUDA_VISIBLE_DEVICES"] = str(k % gpus)
        out = open(ctx.results / f"worker_{k}.log", "ab")
        try:
            procs.append(subprocess.Popen([sys.executable, "-m", "transferkit", *argv, "automl.parallel=1"],
                                          env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        finally:
            out.close()
    log.info("started %d more automl worker process(es): %s (logs in %s/worker_K.log)", count,
             ", ".join(str(p.pid) for p in procs), ctx.results)
    wait_until_ready(ctx.results, procs)
    return procs


def _ready_marker(results: Path, worker: int) -> Path:
    return results / f".worker_{worker}.ready"


def wait_until_ready(results: Path, procs: list[subprocess.Popen], timeout: float = 120.0) -> None:
    """Hold this process's first trial until the workers it started have opened the study (or exited, or `timeout`
    passed): a worker still importing its libraries would otherwise find the trials taken, and parallel=N would
    run them one at a time."""
    end = time.time() + timeout
    waiting = {k: p for k, p in enumerate(procs, start=1)}
    while waiting and time.time() < end:
        waiting = {k: p for k, p in waiting.items() if p.poll() is None and not _ready_marker(results, k).exists()}
        if waiting:
            time.sleep(0.2)
    for k in range(1, len(procs) + 1):
        _ready_marker(results, k).unlink(missing_ok=True)


def stop_workers(procs: list[subprocess.Popen], interrupted: bool) -> None:
    """Wait for the workers (they stop at max_trials); on an interrupt, SIGTERM them first."""
    for p in procs:
        if interrupted and p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            code = p.wait(timeout=120 if interrupted else None)
        except subprocess.TimeoutExpired:
            p.kill()
            code = p.wait()
        if code not in (0, 130, 143, -signal.SIGTERM):
            log.warning("automl worker process %d exited with code %s; see its worker_K.log", p.pid, code)


# -- the verb -------------------------------------------------------------------------------------------

def run_study(task_name: str, spec_path, results, overrides: list[str], *, log_file=None,
              overwrite: bool = False) -> dict[str, Any]:
    import optuna

    from ..tasks import get_task
    from .report import write_report

    task = get_task(task_name)
    schema = spec_schema(task)
    data = apply_overrides(load_yaml(spec_path) if spec_path else {}, overrides)
    source = (str(spec_path) if spec_path else "spec") + (" + overrides" if overrides else "")
    spec = validate(schema, data, source)
    if "search_space" not in (data.get("automl") or {}):
        # No keys named: the task's default space, centred on this spec's learning rate and batch size (a user who
        # set train.batch_size=8 for 60 images is not served by trials at the default spec's 32).
        data = {**data, "automl": {**(data.get("automl") or {}), "search_space": task.default_search_space(spec)}}
        spec = validate(schema, data, source)
    cfg = spec.automl
    if not cfg.search_space:
        raise SpecError("automl.search_space is empty: name the keys to search, e.g. "
                        "automl.search_space='{train.learning_rate: {float: [0.0001, 0.1], log: true}}'")
    check_search_space(schema, data, cfg.search_space, cfg.enqueue)
    if cfg.max_epochs and "train.epochs" in cfg.search_space:
        raise SpecError("automl.max_epochs plans every trial for that many epochs, and train.epochs is in "
                        "automl.search_space: keep one (drop train.epochs from the space, or automl.max_epochs)")
    if spec.train.num_devices > 1 or spec.train.num_nodes > 1:
        raise SpecError("automl trains each trial in one process: set train.num_devices=1 and train.num_nodes=1, and "
                        "run trials side by side with automl.parallel=N (one GPU each) or more workers on the study")
    if spec.train.resume:
        raise SpecError("train.resume=true does not apply to automl trials (each is a new run); to continue a study, "
                        "run the same command again without it")
    metric = cfg.metric or task.monitor
    if cfg.direction is None and metric != task.monitor:
        raise SpecError(f"automl.metric={metric}: say which way it improves with automl.direction=minimize (losses, "
                        "error rates) or =maximize (accuracy, mAP)")
    direction = cfg.direction or ("maximize" if task.monitor_mode == "max" else "minimize")
    if metric == task.monitor and cfg.direction and direction != ("maximize" if task.monitor_mode == "max" else "minimize"):
        raise SpecError(f"automl.direction={direction} contradicts {metric}, which improves towards "
                        f"{task.monitor_mode}; drop the key")
    results = Path(results)
    worker = int(os.environ.get(WORKER_ENV, "0") or 0)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # trials are logged here, once
    with RunFolder(results, log_file=log_file, lock=False, task=task.name, verb="automl", overwrite=overwrite) as run:
        run.claim()
        if worker == 0:
            atomic_write_text(results / "spec.yaml", to_yaml(spec))
        ctx = Context(task=task, spec_path=str(spec_path) if spec_path else None, results=results,
                      overrides=list(overrides), spec=spec, metric=metric, direction=direction, overwrite=overwrite,
                      deadline=None, worker=worker)
        url = storage_url(cfg, results)
        study = open_study(ctx, url, worker)
        if worker:
            _ready_marker(results, worker).touch()  # the process that started this one may begin its trials
        existing = study.get_trials(deepcopy=False)
        if existing:  # a resumed study samples new values, not the first run's sequence again
            study.sampler = make_sampler(cfg, cfg.seed + worker + 7919 * len(existing))
        # A trial's folder is made after the study holds the trial: folders of numbers the study does not know are
        # another study's (its database deleted, or another storage / study name).
        folders = {int(p.name[6:]) for p in results.glob("trial_[0-9]*") if p.name[6:].isdigit()}
        strangers = sorted(folders - {t.number for t in study.get_trials(deepcopy=False)})
        if strangers and not overwrite:
            raise SpecError(f"results folder {results} holds trial_{strangers[0]:04d} (and {len(strangers) - 1} more "
                            f"trial folders) that study '{study.study_name}' in {shown_url(url)} does not know; pass "
                            "another -r DIR, the study's own automl.storage / automl.study_name, or --overwrite")
        if cfg.max_minutes:  # this command's time: a resumed study gets max_minutes more
            ctx.deadline = ctx.started + cfg.max_minutes * 60
        recover_local_trials(study)
        def enqueue(values: dict[str, Any]) -> None:
            study.enqueue_trial({k: to_param(cfg.search_space.get(k), v) for k, v in values.items()}, skip_if_exists=True)

        for values in cfg.enqueue:
            enqueue(values)
        baseline = spec_baseline(spec, cfg.search_space) if cfg.baseline else {}
        if baseline:  # after the enqueued trials, when max_trials leaves room for it
            from optuna.trial import TrialState

            trials = study.get_trials(deepcopy=False)
            planned = len(counted(trials)) + sum(t.state == TrialState.WAITING for t in trials)
            if planned < cfg.max_trials:
                enqueue(baseline)
        log.info("automl: study '%s' in %s, %s %s of %s, %d trial(s) so far, max_trials=%d", study.study_name,
                 shown_url(url), cfg.algorithm, direction, metric, len(existing), cfg.max_trials)
        procs: list[subprocess.Popen] = []
        if cfg.parallel > 1 and worker == 0:
            procs = start_workers(ctx, _command_line(task.name, spec_path, results, overrides, log_file, overwrite),
                                  cfg.parallel - 1)
        ended_early = True  # by a signal or an error: the other workers are stopped too
        try:
            work(study, ctx)
            ended_early = False
        except (TrainingInterrupted, KeyboardInterrupt, Terminated) as e:
            code = getattr(e, "exit_code", 143 if isinstance(e, Terminated) else 130)
            raise TrainingInterrupted(
                f"automl {'interrupted (Ctrl-C)' if code == 130 else 'stopped by SIGTERM'}; finished trials are kept in "
                f"{shown_url(url)}. Continue the study with the same command: tkit {task.name} automl "
                f"{'-e ' + str(spec_path) + ' ' if spec_path else ''}-r {results} ...", exit_code=code) from None
        finally:
            stop_workers(procs, ended_early)
            try:
                if ended_early:
                    from .report import write_trials_csv

                    write_trials_csv(study, ctx)
            except Exception as e:  # never hide the error that ended the study
                log.warning("trials.csv could not be written: %s", first_line(e))
        if worker != 0:  # the process that started this one writes the report
            from .report import write_trials_csv

            write_trials_csv(study, ctx)
            return {}
        return write_report(study, ctx, url, schema)


def _command_line(task: str, spec_path, results: Path, overrides: list[str], log_file, overwrite: bool) -> list[str]:
    argv = [task, "automl", "-r", str(results)]
    if spec_path:
        argv += ["-e", str(spec_path)]
    if log_file:
        argv += ["--log_file", str(log_file)]
    if overwrite:
        argv.append("--overwrite")
    return argv + [o for o in overrides if not o.startswith("automl.parallel=")]
