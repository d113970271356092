"""Spec files: YAML load, dotted overrides, pydantic validation, and default_spec rendering.

A spec is a tree of `SpecModel`s. Every field carries a one-line `description`, which becomes
the comment next to the key in `tkit <task> default_spec`. Unknown keys are refused with the
nearest valid key as a suggestion; wrong types name the dotted key path. The YAML of a spec file or
an override is refused, naming the file and line, when a key is given twice, when it nests deeper
than MAX_SPEC_DEPTH or expands (through aliases) past MAX_SPEC_VALUES values; integers stop at
MAX_SPEC_INT unless a key has a tighter bound.
"""
from __future__ import annotations

import copy
import difflib
import re
import reprlib
import types
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, create_model,
                      field_validator)
from pydantic_core import PydanticCustomError

from .errors import SpecError
from .io import describe_missing

# Integers past this mean nothing to the code that reads a spec (counts, sizes, iterations, ids), and past
# 2**63 they no longer fit the C integers of itertools, numpy and torch: an integer key refuses them unless
# it has an upper bound of its own (`le=`: image sizes, workers, devices, seeds).
MAX_SPEC_INT = 2**31 - 1
# Rates live in float32 optimiser state: a larger (finite) value overflows there with a traceback.
FLOAT32_MAX = 1e38  # rounded down from float32's 3.4e38, so the bound prints and parses exactly


def _ints_within_reach(value: Any) -> None:
    """Refuse an integer beyond +-MAX_SPEC_INT anywhere in a field's value (nested sections check their own)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value > MAX_SPEC_INT:
            raise PydanticCustomError("less_than_equal", "Input should be less than or equal to {le}",
                                      {"le": MAX_SPEC_INT})
        if value < -MAX_SPEC_INT:
            raise PydanticCustomError("greater_than_equal", "Input should be greater than or equal to {ge}",
                                      {"ge": -MAX_SPEC_INT})
    elif isinstance(value, (list, tuple)):
        for item in value:
            _ints_within_reach(item)
    elif isinstance(value, dict):
        for item in value.values():
            _ints_within_reach(item)


class SpecModel(BaseModel):
    """Base of every spec section: unknown keys are errors, values are immutable once validated, every float
    (also inside lists and tuples) must be finite (inf, -inf, 1e309 and nan are refused, naming the key), and no
    integer is larger than MAX_SPEC_INT unless the key says so."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True, allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _no_huge_ints(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name)
        if field is None or not any(isinstance(m, (annotated_types.Le, annotated_types.Lt)) for m in field.metadata):
            _ints_within_reach(value)
        return value


def _min_le_max(pair: tuple) -> tuple:
    if pair[0] > pair[1]:
        raise ValueError("give the range as [min, max], min <= max")
    return pair


_Item = TypeVar("_Item")
# A [min, max] pair of spec values, refused unless min <= max: `MinMax[PositiveFloat]`.
MinMax = Annotated[tuple[_Item, _Item], AfterValidator(_min_le_max)]


# ---------------------------------------------------------------------------------------------
# Sections shared by every task.


class TrainConfig(SpecModel):
    epochs: int = Field(10, gt=0, description="number of passes over the training data")
    batch_size: int = Field(32, gt=0, description="images per step on each device")
    learning_rate: float = Field(0.01, gt=0, le=FLOAT32_MAX, description="peak learning rate")
    optimizer: Literal["sgd", "adam", "adamw"] = Field("sgd", description="sgd | adam | adamw")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(5e-5, ge=0, description="L2 weight decay")
    grad_clip_norm: float | None = Field(
        None, gt=0, description="clip gradients to this global L2 norm before each step (empty = off)"
    )
    accumulate_grad_batches: int = Field(
        1, ge=1, description="sum gradients over this many batches per optimiser step (effective batch x N)"
    )
    backbone_lr_scale: float = Field(
        1.0, gt=0, le=FLOAT32_MAX, description="the pretrained backbone's learning rate is learning_rate x this (e.g. 0.1)"
    )
    lr_scheduler: Literal["cosine", "step", "constant", "linear"] = Field(
        "cosine", description="cosine | step (x0.1 at 1/2 and 3/4 of training) | constant | linear (decay to 0)"
    )
    warmup_epochs: int = Field(0, ge=0, description="linear learning-rate warm-up epochs")
    warmup_fraction: float = Field(
        0.0, ge=0, lt=1, description="warm-up over this fraction of all steps instead (e.g. 0.1; 0 = use warmup_epochs)"
    )
    precision: Literal["32", "bf16-mixed", "16-mixed"] = Field(
        "32", description="32 | bf16-mixed | 16-mixed (AMP); --use_amp picks a mixed one"
    )
    compile: bool = Field(
        False, description="torch.compile the network for training (its first steps pay the compile time, once per "
                           "run; on a CPU it needs a C++ compiler)")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = Field(
        "default", description="torch.compile mode: default | reduce-overhead (CUDA graphs, GPU) | max-autotune")
    compile_backend: str = Field(
        "inductor", min_length=1, description="torch.compile backend: inductor (generates kernels) | aot_eager | "
                                              "eager (debugging: traces only)")
    accelerator: Literal["auto", "cpu", "gpu"] = Field("auto", description="auto | cpu | gpu")
    num_devices: int = Field(1, gt=0, le=64, description="devices (GPUs or CPU processes); >1 uses DDP")
    num_nodes: int = Field(1, gt=0, description="machines for multi-node DDP (torchrun / SLURM)")
    num_workers: int = Field(2, ge=0, le=256, description="DataLoader worker processes per device")
    # numpy's (and so Lightning's) seed range
    seed: int = Field(42, ge=0, le=2**32 - 1, description="random seed for weights, data order and augmentation")
    deterministic: bool = Field(False, description="use deterministic algorithms (reproducible, slower)")
    resume: bool = Field(False, description="continue from last.ckpt in the results folder")
    early_stopping_patience: int = Field(
        0, ge=0, description="stop after this many epochs without improvement of early_stopping_metric (0 = off)"
    )
    early_stopping_metric: str | None = Field(
        None, description="metric early stopping watches, e.g. val/loss (empty = the task's monitor)"
    )
    early_stopping_mode: Literal["min", "max"] | None = Field(
        None, description="min | max: which way that metric improves (needed unless it is the task's monitor)"
    )
    early_stopping_min_delta: float = Field(
        0.0, ge=0, description="a change smaller than this does not count as an improvement"
    )
    log_every_n_steps: int = Field(10, gt=0, description="how often step metrics are logged")
    histograms: bool = Field(True, description="write weight histograms to TensorBoard each epoch")
    max_minutes: float | None = Field(
        None, gt=0, le=1_000_000,
        description="time budget: train the epochs that fit it (train.epochs = ceiling), the schedule ending with them "
        "(empty = no limit)"
    )
    limit_train_batches: float = Field(
        1.0, gt=0, description="fraction (<=1.0) or number (>1) of training batches per epoch"
    )

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value):
        """`precision: 32` in YAML (or `train.precision=32`) is a number there; Lightning's name is the text."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class BackboneModelConfig(SpecModel):
    """The `model` keys every task with a zoo backbone shares; tasks subclass it to add their own."""

    backbone: str = Field("mobilenet_v2", description="zoo model name (`tkit model list`) or timm:<name>")
    pretrained: bool | str = Field(
        True, description="true = zoo ImageNet weights; false = random; or a .pth / transferkit .ckpt path"
    )
    pruned: str | None = Field(None, description="retrain a pruned model: path to pruned.ckpt from `prune`")
    freeze_blocks: list[int] = Field(default_factory=list, description="backbone stages to freeze (0 = stem)")
    freeze_bn: bool = Field(False, description="keep BatchNorm statistics frozen")


class PruneConfig(SpecModel):
    threshold: float | None = Field(
        0.1, ge=0, le=1, description="remove filter groups whose normalised norm is below this (TAO -pth)"
    )
    ratio: float | None = Field(
        None, ge=0, lt=1, description="instead of threshold: fraction of channels to remove"
    )
    norm: Literal["l2", "max"] = Field("l2", description="filter importance: l2 | max")
    granularity: int = Field(8, gt=0, description="kept channel counts are multiples of this")
    min_num_filters: int = Field(16, gt=0, description="never keep fewer filters than this per layer")
    equalization: Literal["union", "intersection", "arithmetic_mean", "geometric_mean"] = Field(
        "union", description="how coupled layers (residual adds) combine importance"
    )
    excluded_layers: list[str] = Field(default_factory=list, description="module names never pruned")
    bn_recalibration_batches: int | None = Field(
        None, ge=0, description="after pruning, re-estimate BatchNorm statistics on this many batches of training "
        "images (train.batch_size each); 0 = off; empty = 20 when the spec gives training data, else skipped with a warning"
    )
    evaluate: bool = Field(False, description="score the val set right after pruning, before and after the "
                           "BatchNorm re-estimation, into prune_report.json")


class ExportConfig(SpecModel):
    opset: int = Field(17, ge=13, description="ONNX opset version")
    int8: bool = Field(False, description="also write an INT8 (QDQ) model calibrated on training images")
    calibration_images: int = Field(64, gt=0, description="training images used for INT8 calibration")
    int8_target: Literal["cpu", "tensorrt", "dynamic"] = Field(
        "cpu", description="cpu: uint8 activations, fastest in ONNX Runtime on x86 | tensorrt: symmetric int8 QDQ | "
                           "dynamic: int8 weights, activations scaled per batch at run time (transformers; no calibration)"
    )
    int8_exclude: list[str] = Field(
        default_factory=list, description="kept in float in the INT8 model, on top of the task's choice: operator "
        "types (ConvTranspose), convolution kinds (conv depthwise, conv 1x1, conv kxk, conv stem) or node names"
    )
    int8_auto_exclude: bool = Field(
        False, description="target cpu: time FP32 and INT8 per operator kind (ONNX Runtime's profiler, batch 1) and "
                           "keep in float each kind INT8 runs slower, while that makes the whole model faster"
    )
    parity_tolerance: float = Field(
        1e-3, gt=0, description="max |PyTorch - ONNX Runtime| output difference accepted"
    )
    engine: bool = Field(False, description="also build a TensorRT engine (needs tensorrt and a GPU)")

    @field_validator("int8_exclude")
    @classmethod
    def _exclude_needs_calibration(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if value and info.data.get("int8_target") == "dynamic":
            raise ValueError("applies to calibrated INT8 (export.int8_target=cpu or tensorrt), not dynamic")
        if any(not entry.strip() for entry in value):
            raise ValueError("an entry is empty: give operator types, convolution kinds or node names")
        return value

    @field_validator("int8_auto_exclude")
    @classmethod
    def _auto_needs_cpu(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("int8_target", "cpu") != "cpu":
            raise ValueError("times ONNX Runtime's CPU kernels: use it with export.int8_target=cpu")
        return value


def with_defaults(base: type[SpecModel], name: str, module: str, doc: str, descriptions: dict[str, str] | None = None,
                  **defaults: Any) -> type[SpecModel]:
    """A subclass `name` (of module `module`) of `base` whose keys `defaults` names default otherwise, and whose
    keys `descriptions` names read otherwise; each key keeps its type and bounds (one place: the base), and a
    partial section in a spec file still gets these defaults, not the base's."""
    fields = {}
    descriptions = descriptions or {}
    for key in {**defaults, **descriptions}:
        info = copy.deepcopy(base.model_fields[key])
        value = defaults.get(key, info.default)
        info.default = value
        info._attributes_set = {**info._attributes_set, "default": value}  # what pydantic copies from a FieldInfo
        text = descriptions.get(key)
        if text is not None:
            info.description = text
            info._attributes_set["description"] = text
        fields[key] = (base.model_fields[key].annotation, info)
    return create_model(name, __base__=base, __doc__=doc, __module__=module, **fields)


# ---------------------------------------------------------------------------------------------
# Loading, overrides, validation.


# A spec is a few sections a few levels deep, at most a class list or mapping of some thousands of
# entries; these limits refuse YAML that would only make sense as an attack or an accident (an alias bomb
# expanding to billions of values, thousands of nested brackets) before Python runs out of memory or stack.
MAX_SPEC_DEPTH = 64
MAX_SPEC_VALUES = 1_000_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Refused(Exception):
    """YAML the spec loader will not build: `where` is the node's mark, or None."""

    def __init__(self, problem: str, where: yaml.Mark | None = None):
        super().__init__(problem)
        self.problem, self.where = problem, where


class _SpecLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate keys, nesting deeper than MAX_SPEC_DEPTH, aliases that refer to
    the node holding them, and integers longer than Python will convert, while composing; `_load_text`
    then refuses a document that expands past MAX_SPEC_VALUES values before anything is constructed."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._path: list[str] = []  # key path of the node being composed, for messages
        self._open: set[str] = set()  # anchors of the nodes being composed
        self.aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open:
                raise _Refused(f"alias *{event.anchor} refers to the node that contains it", event.start_mark)
            self.aliases += 1
            return super().compose_node(parent, index)
        if len(self._path) >= MAX_SPEC_DEPTH:
            raise _Refused(f"nested more than {MAX_SPEC_DEPTH} levels deep", event.start_mark)
        self._path.append(f"[{index}]" if isinstance(index, int) else
                          str(index.value) if isinstance(index, yaml.ScalarNode) else "")
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._open.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._path.pop()
            self._open.discard(anchor)

    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        first_line: dict[tuple[str, str], int] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
                continue  # `<<: *base` merges may be overridden by the mapping's own keys, as YAML says
            ident, line = (key.tag, key.value), key.start_mark.line + 1
            if ident in first_line:
                lines = f"lines {first_line[ident]} and {line}" if first_line[ident] != line else f"line {line}"
                shown = _dotted([*self._path[1:], str(key.value)])
                raise _Refused(f"key '{shown}' is given twice ({lines}); YAML keys must be unique: keep one",
                               key.start_mark)
            first_line[ident] = line
        return node

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # longer than sys.get_int_max_str_digits()
            raise _Refused(f"the number {node.value[:12]}... has {len(node.value)} digits", node.start_mark) from None


_SpecLoader.add_constructor("tag:yaml.org,2002:int", _SpecLoader.construct_yaml_int)


def _dotted(parts: list[str]) -> str:
    return "".join(p if p.startswith("[") or i == 0 else f".{p}" for i, p in enumerate(parts))


def _expanded_size(node: yaml.Node, level: int, memo: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """(values, levels) of `node` once its aliases are expanded; a node shared through aliases is walked once."""
    if level > MAX_SPEC_DEPTH:
        raise _Refused(f"nested more than {MAX_SPEC_DEPTH} levels deep once aliases are expanded", node.start_mark)
    known = memo.get(id(node))
    if known is None:
        children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else \
            node.value if isinstance(node, yaml.SequenceNode) else []
        values, levels = 1, 1
        for child in children:
            count, depth = _expanded_size(child, level + 1, memo)
            values, levels = values + count, max(levels, depth + 1)
            if values > MAX_SPEC_VALUES:
                raise _Refused(f"more than {MAX_SPEC_VALUES:,} values")
        known = memo[id(node)] = (values, levels)
    if level + known[1] - 1 > MAX_SPEC_DEPTH:
        raise _Refused(f"nested more than {MAX_SPEC_DEPTH} levels deep once aliases are expanded", node.start_mark)
    return known


def _load_text(text: str) -> Any:
    """yaml.safe_load with the spec loader's limits; raises _Refused or yaml.YAMLError."""
    loader = _SpecLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            _expanded_size(node, 1, {})
        except _Refused as e:
            if e.problem.startswith("more than") and loader.aliases:
                raise _Refused(f"expands to {e.problem} through YAML aliases (*name); refused as an alias "
                               "bomb") from None
            if e.problem.startswith("more than"):
                raise _Refused(f"holds {e.problem}; a spec this large is refused") from None
            raise
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file {path} {describe_missing(path)} (-e); `tkit <task> default_spec > spec.yaml` writes one")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not UTF-8 text at byte {e.start}; save the spec as UTF-8") from e
    try:
        data = _load_text(text)
    except _Refused as e:
        where = f"{path}:{e.where.line + 1}" if e.where is not None else str(path)
        raise SpecError(f"{where}: {e.problem}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        hint = " (tabs cannot indent YAML; use spaces)" if "\\t" in str(e) or "\t" in str(e) else ""
        problem = e.problem
        if e.context and e.context.startswith("found duplicate anchor") and e.context_mark:  # problem: "second ..."
            problem = f"{e.context.split(';')[0]} (first on line {e.context_mark.line + 1})"
        raise SpecError(f"{where}: YAML syntax error: {problem}{hint}") from e
    except yaml.reader.ReaderError as e:  # a control character; PyYAML gives its offset, not its line
        line = text.count("\n", 0, e.position) + 1
        column = e.position - text.rfind("\n", 0, e.position)
        raise SpecError(f"{path}:{line}:{column}: YAML syntax error: character #x{e.character:04x} is not allowed in "
                        "YAML; remove it") from e
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: YAML syntax error: {str(e).splitlines()[0]}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec must be a mapping of sections (data:, model:, train: ...), got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.epochs=3` -> (["train", "epochs"], 3). Values are read as YAML scalars/lists."""
    if "=" not in text:
        raise SpecError(f"override '{text}' must look like key.path=value, e.g. train.epochs=3")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise SpecError(f"override '{text}': empty key part; use dotted keys such as train.epochs=3")
    if key.count(".") >= MAX_SPEC_DEPTH:
        raise SpecError(f"override '{key[:40]}...': the key is more than {MAX_SPEC_DEPTH} levels deep")
    try:
        value = _load_text(raw) if raw.strip() else None
    except _Refused as e:
        raise SpecError(f"override '{key}=...': {e.problem}") from None
    except yaml.YAMLError:
        value = raw  # a plain string that is not valid YAML, e.g. a path with ': '
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = _deep_copy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise SpecError(f"override '{text}': {'.'.join(parts[: i + 1])} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def key_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every valid dotted key of a spec schema, sections included."""
    paths = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        sub = _section_type(field.annotation)
        if sub is not None:
            paths.extend(key_paths(sub, path + "."))
    return paths


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        for arg in get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None


def suggest_key(bad: str, schema: type[BaseModel]) -> str | None:
    valid = key_paths(schema)
    match = difflib.get_close_matches(bad, valid, n=1, cutoff=0.6)
    if match:
        return match[0]
    leaf = bad.rsplit(".", 1)[-1]
    by_leaf = {p.rsplit(".", 1)[-1]: p for p in valid}
    match = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)
    return by_leaf[match[0]] if match else None


# Shows a refused value in a message without building the whole text of a huge list first.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxtuple, _REPR.maxlist, _REPR.maxdict = 3, 20, 20, 20
_REPR.maxstring = _REPR.maxlong = _REPR.maxother = 200


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a section"
    try:
        shown = _REPR.repr(value)
    except ValueError:  # an integer with more digits than Python converts to text
        shown = "a number too long to show"
    return shown if len(shown) <= 60 else shown[:57] + "..."


# Sections only some tasks' specs have: another task's spec says why it refuses them.
ONLY_IN_SOME_TASKS = {"distill": "knowledge distillation is supported by classification only"}


def _describe_error(err: dict, schema: type[BaseModel]) -> str:
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        if key.split(".")[0] in ONLY_IN_SOME_TASKS:
            return f"unknown key '{key}': {ONLY_IN_SOME_TASKS[key.split('.')[0]]}"
        hint = suggest_key(key, schema)
        return f"unknown key '{key}'" + (f" (did you mean '{hint}'?)" if hint else "")
    message = err["msg"][0].lower() + err["msg"][1:]
    bound = (err.get("ctx") or {}).get("le", (err.get("ctx") or {}).get("lt"))
    if isinstance(bound, float) and abs(bound) >= 1e16:  # pydantic spells 1e38 with 39 digits
        message = re.sub(r"\d{17,}", f"{bound:g}", message)
    return f"{key}: {message}, got {_shown(err.get('input'))}"


def validate(schema: type[BaseModel], data: dict, source: str = "spec") -> Any:
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        errors = e.errors()
        first = _describe_error(errors[0], schema)
        more = f" (+{len(errors) - 1} more problem{'s' if len(errors) > 2 else ''}: " + "; ".join(
            _describe_error(x, schema) for x in errors[1:3]
        ) + ")" if len(errors) > 1 else ""
        raise SpecError(f"{source}: {first}{more}") from e


def load_spec(schema: type[BaseModel], path: str | Path | None, overrides: list[str] = ()) -> Any:
    """Spec file (or the defaults when `path` is None) + dotted overrides -> validated spec."""
    data = load_yaml(path) if path else {}
    data = apply_overrides(data, list(overrides))
    source = str(path) if path else "spec"
    if overrides:
        source += " + overrides"
    return validate(schema, data, source)


def to_yaml(spec: BaseModel) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)


def require_path(key: str, value: str | Path | None, kind: str = "path") -> Path:
    """Check a spec path exists at the moment a verb needs it; errors name the key."""
    if value in (None, ""):
        raise SpecError(f"{key} is not set: give it in the spec or as {key}=PATH")
    path = Path(value).expanduser()
    if kind == "dir" and not path.is_dir():
        raise SpecError(f"{key}: folder {path} does not exist" + (" (it is a file)" if path.is_file() else ""))
    if kind == "file" and not path.is_file():
        raise SpecError(f"{key}: file {path} {describe_missing(path)}")
    if kind == "path" and not path.exists():
        raise SpecError(f"{key}: {path} does not exist")
    return path


# ---------------------------------------------------------------------------------------------
# default_spec: every key with its default and a one-line comment.


def render_default_spec(schema: type[BaseModel], header: str = "") -> str:
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    _render(schema, schema(), 0, lines)
    return "\n".join(lines) + "\n"


def _render(schema: type[BaseModel], instance: BaseModel, indent: int, lines: list[str]) -> None:
    pad = "  " * indent
    for name, field in schema.model_fields.items():
        value = getattr(instance, name)  # a task may give a shared section its own defaults
        sub = _section_type(field.annotation)
        comment = f"  # {field.description}" if field.description else ""
        if sub is not None and isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:{comment}")
            _render(sub, value, indent + 1, lines)
            continue
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            lines.append(f"{pad}{name}:{comment}")  # a mapping of mappings (automl.search_space): one entry a line
            lines.extend(f"{pad}  {_flow(k)}: {_flow(v)}" for k, v in value.items())
            continue
        lines.append(f"{pad}{name}: {_flow(value)}{comment}")


def _flow(value: Any) -> str:
    """`value` as one line of flow-style YAML."""
    dumped = yaml.safe_dump(_jsonable(value), default_flow_style=True, width=10_000).strip()
    if dumped.endswith("\n..."):
        dumped = dumped[: -len("\n...")]
    return dumped.removesuffix("...").strip()


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


__all__ = [
    "SpecModel", "MinMax", "TrainConfig", "BackboneModelConfig", "PruneConfig", "ExportConfig", "Field", "load_spec", "load_yaml",
    "apply_overrides", "parse_override", "validate", "to_yaml", "render_default_spec",
    "require_path", "key_paths", "suggest_key",
]
