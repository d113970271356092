"""What a study leaves in its results folder: trials.csv, a table in the log, best_spec.yaml, metrics.json,
PNG plots (optimisation history, parameter importances, parallel coordinates) and the same in TensorBoard."""
from __future__ import annotations

import csv
import io
import logging
import math
import warnings
from pathlib import Path
from typing import Any

from ..errors import first_line
from ..io import atomic_write_json, atomic_write_text, atomic_write_with
from ..spec import load_spec, to_yaml

log = logging.getLogger("transferkit")

PLOTS = ("optimization_history.png", "param_importances.png", "parallel_coordinates.png")


def _keys(study, ctx) -> list[str]:
    """The searched keys: the spec's search space, then any key earlier runs of the study searched."""
    keys = list(ctx.cfg.search_space)
    for trial in study.get_trials(deepcopy=False):
        keys += [k for k in trial.params if k not in keys]
    return keys


def _seconds(trial) -> float | None:
    seconds = trial.user_attrs.get("seconds")
    if seconds is None and trial.datetime_start and trial.datetime_complete:
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    return round(seconds, 2) if seconds is not None else None


def _reason(trial) -> str:
    attrs = trial.user_attrs
    parts = []
    if trial.state.name == "PRUNED":
        parts.append(attrs.get("fail_reason") or f"pruned after epoch {attrs.get('pruned_at_epoch', '?')}")
    elif trial.state.name == "FAIL":
        parts.append(attrs.get("fail_reason", "failed"))
    if "note" in attrs:
        parts.append(attrs["note"])
    if "retry_of" in attrs:
        parts.append(f"retry of trial {attrs['retry_of']}")
    return "; ".join(parts)


def trial_rows(study, ctx) -> tuple[list[str], list[list[Any]]]:
    """(header, rows) of trials.csv: number, state, metric, one column per searched key, seconds, reason."""
    from .study import from_param

    keys = _keys(study, ctx)
    space = ctx.cfg.search_space
    header = ["number", "state", "metric", *keys, "seconds", "reason"]
    rows = []
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        value = trial.value if trial.state.name == "COMPLETE" else None
        given = trial.params or (trial.system_attrs.get("fixed_params") or {} if trial.state.name == "WAITING" else {})
        params = [from_param(space.get(k), given[k]) if k in given else "" for k in keys]
        rows.append([trial.number, trial.state.name, "" if value is None else value, *params, _seconds(trial) or "",
                     _reason(trial)])
    return header, rows


def write_trials_csv(study, ctx) -> Path:
    header, rows = trial_rows(study, ctx)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_csv_cell(v) for v in row])
    return atomic_write_text(ctx.results / "trials.csv", buffer.getvalue())


def _csv_cell(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return str(value)
    return value


def table_text(header: list[str], rows: list[list[Any]]) -> str:
    """The trials as a fixed-width text table (the log's copy of trials.csv)."""
    cells = [[str(h) for h in header]] + [[str(_csv_cell(v)) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def best_overrides(trial, ctx) -> list[str]:
    from .study import from_param, override

    space = ctx.cfg.search_space
    return [override(k, from_param(space.get(k), v)) for k, v in trial.params.items()]


def write_report(study, ctx, url: str, schema) -> dict[str, Any]:
    """Everything the study's results folder holds besides the trial folders; returns metrics.json's content."""
    from optuna.trial import TrialState

    from .study import counted, shown_url

    results = ctx.results
    trials = study.get_trials(deepcopy=False)
    header, rows = trial_rows(study, ctx)
    write_trials_csv(study, ctx)
    log.info("automl trials (%s, %s):\n%s", ctx.metric, ctx.direction, table_text(header, rows))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    counts = {state.name: sum(t.state == state for t in trials)
              for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING,
                            TrialState.WAITING)}
    best_entry: dict[str, Any] = {}
    if complete:
        best = study.best_trial
        spec = load_spec(schema, ctx.spec_path, [*ctx.overrides, *best_overrides(best, ctx)])
        note = (f"# best trial {best.number} of automl study '{study.study_name}': {ctx.metric}={best.value:.6g}\n"
                f"# train it: tkit {ctx.task.name} train -e best_spec.yaml -r runs/best\n")
        atomic_write_text(results / "best_spec.yaml", note + to_yaml(spec))
        best_entry = {"number": best.number, "value": best.value, "params": _params(best, ctx),
                      "trial_dir": best.user_attrs.get("dir", str(results / f"trial_{best.number:04d}")),
                      "spec": str(results / "best_spec.yaml")}
        log.info("best trial %d: %s=%.4g with %s; its spec: %s", best.number, ctx.metric, best.value,
                 ", ".join(f"{k}={v}" for k, v in best_entry["params"].items()), results / "best_spec.yaml")
    else:
        log.warning("no trial completed, so there is no best_spec.yaml; see the reasons in %s", results / "trials.csv")
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    finished = [t for t in trials if t.state.is_finished()]
    hours = (max(ends) - min(starts)).total_seconds() / 3600 if starts and ends else 0.0
    summary = {
        "task": ctx.task.name, "metric": ctx.metric, "direction": ctx.direction, "study_name": study.study_name,
        "storage": shown_url(url), "algorithm": ctx.cfg.algorithm, "max_trials": ctx.cfg.max_trials,
        "trials": len(trials), "counted_trials": len(counted(trials)), "states": counts, "best": best_entry,
        "study_wall_time_s": round(hours * 3600, 2),
        "trials_per_hour": round(len(finished) / hours, 2) if hours > 0 else None,
        "trial_seconds_mean": _mean([_seconds(t) for t in finished]),
        "plots": [],
    }
    try:
        summary["plots"] = write_plots(study, ctx)
    except Exception as e:  # plots are a view of the study; the study's results stand without them
        log.warning("automl plots could not be drawn: %s", first_line(e))
    atomic_write_json(results / "metrics.json", summary)
    return summary


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 2) if values else None


def _params(trial, ctx) -> dict[str, Any]:
    from .study import from_param

    return {k: from_param(ctx.cfg.search_space.get(k), v) for k, v in trial.params.items()}


# -- plots -------------------------------------------------------------------------------------------

def importances(study) -> dict[str, float]:
    """Optuna's fANOVA parameter importances; {} when the completed trials cannot tell (fewer than 2, no spread)."""
    import optuna

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(study))
    except (ValueError, RuntimeError, ZeroDivisionError, ImportError):
        return {}


def write_plots(study, ctx) -> list[str]:
    """The three PNGs in the results folder, and the same figures plus each trial's value in TensorBoard."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from optuna.trial import TrialState

    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)]
    maximize = ctx.direction == "maximize"
    figures = {}

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    if complete:
        xs = [t.number for t in complete]
        ys = [t.value for t in complete]
        running, best = [], None
        for y in ys:
            best = y if best is None or (y > best if maximize else y < best) else best
            running.append(best)
        ax.scatter(xs, ys, s=18, label="trial", color="#4477aa")
        ax.step(xs, running, where="post", color="#cc3311", label="best so far")
        ax.legend(loc="best")
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    if pruned:
        ax.scatter([t.number for t in pruned], [list(t.intermediate_values.values())[-1] for t in pruned], s=14,
                   marker="x", color="#999999", label="pruned (last report)")
        ax.legend(loc="best")
    ax.set_xlabel("trial")
    ax.set_ylabel(ctx.metric)
    ax.set_title(f"optimisation history ({ctx.direction})")
    figures["optimization_history.png"] = fig

    scores = importances(study)
    fig = Figure(figsize=(7, max(2.5, 0.45 * len(scores) + 1.2)), dpi=100)
    ax = fig.add_subplot()
    if scores:
        names = list(scores)[::-1]
        ax.barh(names, [scores[n] for n in names], color="#228833")
        ax.set_xlabel("importance (fANOVA)")
    else:
        ax.text(0.5, 0.5, "needs at least 2 completed trials with different values", ha="center", va="center")
        ax.set_axis_off()
    ax.set_title(f"parameter importances for {ctx.metric}")
    fig.tight_layout()
    figures["param_importances.png"] = fig

    figures["parallel_coordinates.png"] = _parallel_coordinates(Figure, complete, ctx)
    paths = []
    for name, figure in figures.items():
        FigureCanvasAgg(figure)
        atomic_write_with(ctx.results / name, lambda tmp, f=figure: f.savefig(tmp, format="png"))
        paths.append(str(ctx.results / name))
    _tensorboard(ctx, complete, paths)
    return paths


def _parallel_coordinates(Figure, complete, ctx):
    """One line per completed trial through an axis per searched key (scaled to its range) and the metric."""
    from .study import from_param

    keys = [k for k in _keys_of(complete) if k in ctx.cfg.search_space] or _keys_of(complete)
    fig = Figure(figsize=(max(6, 1.6 * (len(keys) + 1)), 4.5), dpi=100)
    ax = fig.add_subplot()
    ax.set_title(f"parallel coordinates (colour: {ctx.metric})")
    if not complete or not keys:
        ax.text(0.5, 0.5, "no completed trial yet", ha="center", va="center")
        ax.set_axis_off()
        return fig
    from matplotlib import colormaps

    axes = keys + [ctx.metric]
    columns, labels = [], []
    for key in keys:
        dim = ctx.cfg.search_space.get(key, {})
        raw = [from_param(dim, t.params.get(key)) for t in complete]
        if "choice" in dim or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
            options = [str(c) for c in dim.get("choice", sorted({str(v) for v in raw}))]
            index = {o: i for i, o in enumerate(options)}
            columns.append([index.get(str(v), 0) / max(1, len(options) - 1) for v in raw])
            labels.append(f"{key}\n{options[0]} .. {options[-1]}")
            continue
        log_scale = dim.get("log", False)
        values = [math.log10(v) if log_scale else v for v in raw]
        lo, hi = min(values), max(values)
        columns.append([(v - lo) / (hi - lo) if hi > lo else 0.5 for v in values])
        labels.append(f"{key}\n{min(raw):.3g} .. {max(raw):.3g}{' (log)' if log_scale else ''}")
    metric = [t.value for t in complete]
    lo, hi = min(metric), max(metric)
    columns.append([(v - lo) / (hi - lo) if hi > lo else 0.5 for v in metric])
    labels.append(f"{ctx.metric}\n{lo:.4g} .. {hi:.4g}")
    cmap = colormaps["viridis"]
    order = sorted(range(len(complete)), key=lambda i: metric[i] if ctx.direction == "maximize" else -metric[i])
    for i in order:  # the best trials drawn last, on top
        colour = cmap(columns[-1][i] if ctx.direction == "maximize" else 1 - columns[-1][i])
        ax.plot(range(len(axes)), [c[i] for c in columns], color=colour, alpha=0.8, linewidth=1.5)
    ax.set_xticks(range(len(axes)), labels, fontsize=7)
    ax.set_yticks([0, 1], ["min", "max"])
    for x in range(len(axes)):
        ax.axvline(x, color="#cccccc", linewidth=0.8, zorder=0)
    fig.tight_layout()
    return fig


def _keys_of(trials) -> list[str]:
    keys: list[str] = []
    for t in trials:
        keys += [k for k in t.params if k not in keys]
    return keys


def _tensorboard(ctx, complete, pngs: list[str]) -> None:
    """results/tensorboard: each completed trial's metric and the best so far by trial number, and the plots."""
    import numpy as np
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    folder = ctx.results / "tensorboard"
    folder.mkdir(exist_ok=True)
    for old in folder.glob("events.out.tfevents.*"):  # this report replaces the previous one
        old.unlink(missing_ok=True)
    writer = SummaryWriter(str(folder))
    try:
        best = None
        for t in complete:
            better = best is None or (t.value > best if ctx.direction == "maximize" else t.value < best)
            best = t.value if better else best
            writer.add_scalar(f"automl/{ctx.metric}", t.value, t.number)
            writer.add_scalar(f"automl/best_{ctx.metric}", best, t.number)
            seconds = _seconds(t)
            if seconds is not None:
                writer.add_scalar("automl/trial_seconds", seconds, t.number)
        for png in pngs:
            with Image.open(png) as image:
                writer.add_image(f"automl/{Path(png).stem}", np.asarray(image.convert("RGB")), 0, dataformats="HWC")
    finally:
        writer.close()
