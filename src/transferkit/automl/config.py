"""The `automl` spec section every task's spec accepts, and the check of its search space against the task's spec.

A task's own spec class does not declare the section: `spec_schema(task)` is the task's spec class plus
`automl`, built once per task, so a task added later gets the section (and the `automl` verb) with no code of
its own; `Task.default_search_space()` gives the section's default search space.
"""
from __future__ import annotations

import functools
import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, create_model

from ..errors import SpecError
from ..spec import SpecModel, _section_type, key_paths, suggest_key, validate

DIM_KINDS = ("float", "int", "choice")


def _check_dim(dim: dict[str, Any]) -> dict[str, Any]:
    """One search dimension: {float: [lo, hi], log: bool, step: x} | {int: [lo, hi], log, step} | {choice: [...]}."""
    if not isinstance(dim, dict):
        raise ValueError("a search dimension is {float: [lo, hi]}, {int: [lo, hi]} or {choice: [a, b, ...]}")
    kinds = [k for k in DIM_KINDS if k in dim]
    if len(kinds) != 1:
        raise ValueError("give exactly one of float: [lo, hi], int: [lo, hi] or choice: [a, b, ...]")
    kind = kinds[0]
    extra = set(dim) - {kind, "log", "step"}
    if extra or (kind == "choice" and set(dim) != {"choice"}):
        raise ValueError(f"unknown entr{'ies' if len(extra) > 1 else 'y'} {sorted(extra or set(dim) - {'choice'})}; "
                         "a dimension has float/int (with optional log, step) or choice")
    value = dim[kind]
    if kind == "choice":
        if not isinstance(value, list) or not value:
            raise ValueError("choice takes a non-empty list of values, e.g. {choice: [mobilenet_v2, efficientnet_lite0]}")
        return dim
    number = float if kind == "float" else int
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            or (kind == "int" and not all(isinstance(v, int) for v in value))):
        raise ValueError(f"{kind} takes [min, max] of {'integers' if kind == 'int' else 'numbers'}, e.g. "
                         f"{{{kind}: {'[1, 8]' if kind == 'int' else '[0.0001, 0.1]'}}}")
    lo, hi = value
    if not all(math.isfinite(v) for v in value):
        raise ValueError(f"{kind}: [min, max] must be finite numbers")
    if lo > hi:
        raise ValueError(f"{kind}: give the range as [min, max], min <= max (got [{lo}, {hi}])")
    log = dim.get("log", False)
    if not isinstance(log, bool):
        raise ValueError("log is true or false")
    step = dim.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not step > 0 or (kind == "int" and not isinstance(step, int)):
            raise ValueError(f"step must be a positive {'integer' if kind == 'int' else 'number'}")
        if log:
            raise ValueError("step and log: true cannot be combined (Optuna samples a log range continuously)")
    if log and lo <= 0:
        raise ValueError(f"log: true needs min > 0 (got {lo})")
    return {**dim, kind: [number(lo), number(hi)]}


SearchDim = Annotated[dict[str, Any], AfterValidator(_check_dim)]


class AutoMLConfig(SpecModel):
    """The keys of the `automl` section (`tkit <task> automl`); other verbs ignore it."""

    search_space: dict[str, SearchDim] = Field(
        default_factory=dict,
        description="spec keys to search: {float: [lo, hi], log: true} | {int: [lo, hi]} | {choice: [a, b]}")
    algorithm: Literal["bayesian", "hyperband", "random"] = Field(
        "bayesian", description="bayesian (TPE or GP sampler) | hyperband (TPE + Hyperband pruning) | random")
    sampler: Literal["tpe", "gp"] = Field("tpe", description="the Bayesian sampler: tpe | gp (Gaussian process)")
    metric: str | None = Field(None, description="validation metric to optimise (empty = the task's monitor)")
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="maximize | minimize (empty = the way the task's monitor improves)")
    max_trials: int = Field(20, gt=0, le=100_000, description="trials in the study, all workers together")
    max_minutes: float | None = Field(
        None, gt=0, le=1_000_000, description="this worker starts no trial after this many minutes; the one running "
                                              "then stops there (empty = no limit)")
    parallel: int = Field(1, ge=1, le=64, description="worker processes on this machine sharing the study")
    storage: str | None = Field(
        None, description="Optuna RDB URL, e.g. postgresql+psycopg://user@host/db (empty = sqlite study.db in -r)")
    study_name: str | None = Field(None, description="study name inside the storage (empty = the task name)")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="sampler seed (each worker adds its own offset)")
    pruner: Literal["auto", "median", "hyperband", "none"] = Field(
        "auto", description="stop bad trials early: auto (hyperband for algorithm=hyperband, else median) | "
                            "median | hyperband | none")
    pruner_warmup_epochs: int = Field(0, ge=0, description="never prune a trial before this many epochs")
    max_epochs: int | None = Field(
        None, gt=0, le=100_000, description="every trial is planned for this many epochs (its learning-rate schedule "
                                            "too), the resource the pruner cuts most trials short of (empty = the "
                                            "spec's train.epochs); not with train.epochs in the search space")
    startup_trials: int | None = Field(
        None, ge=0, description="random trials before the Bayesian sampler and the median pruner start "
                                "(empty = max_trials / 4, 2 to 10)")
    enqueue: list[dict[str, Any]] = Field(
        default_factory=list, description="trials to run first, e.g. [{train.learning_rate: 0.01}] (keys of "
                                          "search_space; the others are sampled)")
    baseline: bool = Field(
        True, description="also run the spec's own values of the searched keys as a trial (after the enqueued "
                          "ones), so the best trial is never one the spec as given would beat")


def _automl_field(task) -> tuple[type, Any]:
    """The `automl` field of `task`'s spec: AutoMLConfig whose search_space defaults to the task's own."""
    space = task.default_search_space()
    section = create_model(
        f"{type(task).__name__}AutoML", __base__=AutoMLConfig, __module__=__name__,
        search_space=(dict[str, SearchDim], Field(default_factory=lambda: {k: dict(v) for k, v in space.items()},
                                                  description=AutoMLConfig.model_fields["search_space"].description)))
    return section, Field(default_factory=section, description="hyper-parameter search (tkit <task> automl)")


@functools.lru_cache(maxsize=None)
def _schema(task, spec_class: type) -> type:
    if "automl" in spec_class.model_fields:  # a task that declares the section itself
        return spec_class
    return create_model(spec_class.__name__, __base__=spec_class, __module__=spec_class.__module__,
                        __doc__=spec_class.__doc__, automl=_automl_field(task))


def spec_schema(task) -> type:
    """`task.spec_class` with the shared `automl` section: the schema every verb reads a spec file with."""
    return _schema(task, task.spec_class)


# -- the search space checked against the task's spec ------------------------------------------

def set_dotted(data: dict, key: str, value: Any) -> dict:
    """A copy of the spec data `data` with `key` (dotted) set to `value` (sections created as needed)."""
    parts = key.split(".")
    out = dict(data)
    node = out
    for part in parts[:-1]:
        child = node.get(part)
        child = dict(child) if isinstance(child, dict) else {}
        node[part] = child
        node = child
    node[parts[-1]] = value
    return out


def leaf_keys(schema: type[BaseModel]) -> list[str]:
    """The dotted keys of `schema` that hold values (not sections), the automl section left out."""
    out = []
    for path in key_paths(schema):
        if path == "automl" or path.startswith("automl."):
            continue
        model: Any = schema
        for part in path.split(".")[:-1]:
            model = _section_type(model.model_fields[part].annotation)
        if _section_type(model.model_fields[path.rsplit(".", 1)[-1]].annotation) is None:
            out.append(path)
    return out


def dim_probe_values(dim: dict[str, Any]) -> list[Any]:
    """The values of a dimension whose acceptance by the spec proves the whole dimension acceptable."""
    if "choice" in dim:
        return list(dim["choice"])
    kind = "float" if "float" in dim else "int"
    return list(dict.fromkeys(dim[kind]))


def check_search_space(schema: type[BaseModel], data: dict, space: dict[str, dict], enqueue: list[dict]) -> None:
    """Refuse, before any trial runs, a search-space key the task's spec does not have (with the nearest key) and
    any value of a dimension (its min and max, each choice, each enqueued value) the key's own bounds refuse."""
    valid = set(leaf_keys(schema))
    for key in space:
        if key not in valid:
            if key == "automl" or key.startswith("automl."):
                raise SpecError(f"automl.search_space: '{key}' is the search's own setting, not a training key")
            hint = suggest_key(key, schema)
            hint = f" (did you mean '{hint}'?)" if hint and not hint.startswith("automl") else ""
            raise SpecError(f"automl.search_space: unknown key '{key}'{hint}; search keys of the task's spec, such "
                            f"as train.learning_rate")
    probes = [(f"automl.search_space.{key}", key, v) for key, dim in space.items() for v in dim_probe_values(dim)]
    for i, trial in enumerate(enqueue):
        for key, value in trial.items():
            if key not in space:
                raise SpecError(f"automl.enqueue[{i}]: '{key}' is not a key of automl.search_space "
                                f"({', '.join(space) or 'empty'}); enqueued trials fix searched keys only")
            dim = space[key]
            if "choice" in dim and value not in dim["choice"]:
                raise SpecError(f"automl.enqueue[{i}].{key}: {value!r} is not one of its choices {dim['choice']}")
            if "choice" not in dim:
                lo, hi = dim.get("float") or dim["int"]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                    raise SpecError(f"automl.enqueue[{i}].{key}: {value!r} is outside the searched range [{lo}, {hi}]")
            probes.append((f"automl.enqueue[{i}].{key}", key, value))
    for where, key, value in probes:
        try:
            validate(schema, set_dotted(data, key, value), "spec")
        except SpecError as e:
            reason = str(e).removeprefix("spec: ")
            raise SpecError(f"{where}: the value {value!r} is refused by the spec ({reason}); keep the range "
                            "within the key's bounds") from None


_MISSING = object()


def spec_baseline(spec: BaseModel, space: dict[str, dict]) -> dict[str, Any]:
    """The validated spec's own value of every search-space key that lies inside its dimension (a choice it
    lists, a number within [lo, hi]); keys outside are left to the sampler."""
    values: dict[str, Any] = {}
    for key, dim in space.items():
        node: Any = spec
        for part in key.split("."):
            node = node.get(part, _MISSING) if isinstance(node, dict) else getattr(node, part, _MISSING)
            if node is _MISSING:
                break
        if node is _MISSING:
            continue
        value = list(node) if isinstance(node, tuple) else node
        if "choice" in dim:
            if value in list(dim["choice"]):
                values[key] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            lo, hi = dim["float" if "float" in dim else "int"]
            if lo <= value <= hi and ("float" in dim or float(value).is_integer()):
                values[key] = value
    return values
