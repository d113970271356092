"""Labelled sentences for text classification: TSV, CSV and JSON lines readers, label names and indices, and the
DataModule.

Every row that cannot be used is named `file:line` with the reason and skipped (never a traceback): a wrong
column count, an empty sentence, a missing or unknown label, a label index outside data.labels_file, a label that
no class can be named (a control character: data.names), a line that is not UTF-8 or not JSON. Blank lines are
ignored and counted in the run's warnings. A label name list (data.labels, data.labels_file) with such a name is
refused as a whole.
"""
from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ...data.module import split_validation
from ...data.names import class_name_problem
from ...engine.meta import ModelMeta
from ...errors import DataError, SpecError
from ...text.data import LineReport, TextData, TextExample, content_lines, decode_surrogates, json_line, read_lines
from ...text.tokenizer import TextTokenizer
from .spec import TCDataConfig, TextClassificationSpec

log = logging.getLogger("transferkit")

FORMATS = {".tsv": "tsv", ".txt": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
TEXT_NAMES = ("text", "sentence")
LABEL_NAMES = ("label", "labels")


@dataclass(frozen=True)
class Row:
    """One labelled sentence as read: its labels are the file's tokens (names, or indices into labels_file)."""

    where: str
    text: str
    labels: tuple[str, ...]


@dataclass
class ReadResult(LineReport):
    """The rows of a labelled file, and (LineReport) the lines left out with their reasons and the blank ones."""

    rows: list[Row] = field(default_factory=list)

    def add(self, where: str, text: str, labels: tuple[str, ...]) -> None:
        """Keep a row, or leave it out when one of its labels cannot be a class name (a control character)."""
        problem = next((f"label {label!r} {why}" for label in labels if (why := class_name_problem(label))), None)
        if problem:
            self.bad[where] = problem
        else:
            self.rows.append(Row(where, text, labels))


def file_format(path: Path, fmt: str, key: str) -> str:
    if fmt != "auto":
        return fmt
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise SpecError(f"{key}: cannot tell the format of {path.name} from its extension; set data.format=tsv, csv "
                        "or jsonl")
    return found


def _split_labels(field: str, separator: str, multi_label: bool) -> tuple[str, ...]:
    field = field.strip()
    if not multi_label:
        return (field,) if field else ()
    return tuple(dict.fromkeys(part.strip() for part in field.split(separator) if part.strip()))


def _read_tsv(path: Path, key: str, cfg: TCDataConfig, multi_label: bool) -> ReadResult:
    result = ReadResult()
    for number, line in content_lines(path, key, result):
        where = f"{path}:{number}"
        columns = line.split("\t")
        if number == 1 and [c.strip().lower() for c in columns] in (["sentence", "label"], ["text", "label"],
                                                                    ["sentence", "labels"], ["text", "labels"]):
            continue  # a header line
        if len(columns) != 2:
            result.bad[where] = (f"expected 2 tab-separated columns (sentence<TAB>label), found {len(columns)}"
                                 + (" (is the file comma-separated? set data.format=csv)" if len(columns) == 1
                                    and "," in line else ""))
            continue
        result.add(where, columns[0].strip(), _split_labels(columns[1], cfg.label_separator, multi_label))
    return result


def _pick(names: Sequence[str], configured: str | None, defaults: Sequence[str], key: str, source: str) -> str:
    if configured is not None:
        if configured not in names:
            raise DataError(f"{source} has no {configured!r} {'column' if key.endswith('column') else 'field'} "
                            f"({key}); it has: {', '.join(names) or 'none'}")
        return configured
    for name in defaults:
        if name in names:
            return name
    raise DataError(f"{source} has none of the columns {', '.join(defaults)}; its header is {', '.join(names)}: "
                    f"set {key} to the right column")


def _read_csv(path: Path, key: str, cfg: TCDataConfig, multi_label: bool) -> ReadResult:
    result = ReadResult()
    try:
        text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    except OSError as e:
        raise DataError(f"{key}: {path} cannot be read ({type(e).__name__})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return result
    except csv.Error as e:
        raise DataError(f"{key}: {path}:1 is not a CSV header ({e})") from None
    header = [h.strip() for h in header]
    text_col = header.index(_pick(header, cfg.text_column, TEXT_NAMES, "data.text_column", str(path)))
    label_col = header.index(_pick(header, cfg.label_column, LABEL_NAMES, "data.label_column", str(path)))
    start = reader.line_num + 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            result.bad[f"{path}:{start}"] = f"not a CSV row ({e})"
            start = reader.line_num + 1
            continue
        where, start = f"{path}:{start}", reader.line_num + 1
        if not fields or not any(f.strip() for f in fields):
            result.blank += 1
            continue
        problem = next((p for p in map(decode_surrogates, fields) if p), None)
        if problem:
            result.bad[where] = problem
        elif len(fields) != len(header):
            result.bad[where] = f"expected {len(header)} comma-separated columns as in the header, found {len(fields)}"
        else:
            result.add(where, fields[text_col].strip(), _split_labels(fields[label_col], cfg.label_separator, multi_label))
    return result


def _json_labels(value: Any, multi_label: bool) -> tuple[str, ...] | str:
    """The label tokens of a JSON value, or why it is not a label."""
    values = value if isinstance(value, list) else [value]
    tokens = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            return f"a label must be a name or an integer index, got {json.dumps(v)[:40]}"
        tokens.append(str(v).strip())
    tokens = [t for t in dict.fromkeys(tokens) if t]
    if not multi_label and len(tokens) > 1:
        return f"{len(tokens)} labels ({', '.join(tokens[:3])}) but model.multi_label is false"
    return tuple(tokens)


def _read_jsonl(path: Path, key: str, cfg: TCDataConfig, multi_label: bool) -> ReadResult:
    result = ReadResult()
    for number, line in content_lines(path, key, result):
        where = f"{path}:{number}"
        record, problem = json_line(line)
        if problem:
            result.bad[where] = problem
            continue
        if not isinstance(record, dict):
            result.bad[where] = "not a JSON object ({\"text\": ..., \"label\": ...})"
            continue
        text_field = cfg.text_column or next((n for n in TEXT_NAMES if n in record), TEXT_NAMES[0])
        label_field = cfg.label_column or next((n for n in LABEL_NAMES if n in record), LABEL_NAMES[0])
        text = record.get(text_field)
        if not isinstance(text, str):
            result.bad[where] = (f"no {text_field!r} field" if text is None else f"{text_field!r} is not a string")
            continue
        labels = _json_labels(record.get(label_field, []), multi_label)
        if isinstance(labels, str):
            result.bad[where] = labels
            continue
        result.add(where, text.strip(), labels)
    return result


READERS = {"tsv": _read_tsv, "csv": _read_csv, "jsonl": _read_jsonl}


def read_rows(path: str | Path, key: str, cfg: TCDataConfig, multi_label: bool) -> ReadResult:
    """Every row of a labelled file (format from data.format or the extension), unusable ones in `bad`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{key}: file {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    return READERS[file_format(path, cfg.format, key)](path, key, cfg, multi_label)


def read_label_names(path: str | Path, key: str = "data.labels_file") -> list[str]:
    """Label names, one per line (blank lines ignored); duplicates and names no class can have are refused."""
    names = []
    for number, line, problem in read_lines(path, key):
        problem = problem or (f"label {line.strip()!r} {why}" if (why := class_name_problem(line.strip())) else None)
        if problem:
            raise DataError(f"{key}: {path}:{number}: {problem}")
        if line.strip():
            names.append(line.strip())
    if not names:
        raise DataError(f"{key}: {path} holds no label names; write one name per line")
    seen = set()
    for name in names:
        if name in seen:
            raise DataError(f"{key}: {path} names the label {name!r} twice; each label once, in output order")
        seen.add(name)
    return names


def label_names(d: TCDataConfig, index_names: list[str] | None, reads: Iterable[ReadResult], found_in: str
                ) -> tuple[list[str], str]:
    """The label names in output order and where they come from: data.labels, else data.labels_file
    (`index_names`), else the sorted names the rows of `reads` use (`found_in`)."""
    if d.labels:
        for i, name in enumerate(d.labels):
            if why := class_name_problem(name):
                raise SpecError(f"data.labels[{i}] is {name!r}, which {why}")
        return list(d.labels), "data.labels"
    if index_names:
        return list(index_names), "data.labels_file"
    return sorted_labels(token for read in reads for row in read.rows for token in row.labels), found_in


def sorted_labels(names: Iterable[str]) -> list[str]:
    """Label names in a stable order: numerically when every name is an integer, else alphabetically."""
    unique = set(names)
    if unique and all(n.lstrip("-").isdigit() for n in unique):
        return sorted(unique, key=int)
    return sorted(unique)


class LabelResolver:
    """Label tokens -> label indices: integer tokens index `index_names` (data.labels_file) when given, names
    must be among `classes`; anything else is a reason to skip the row."""

    def __init__(self, classes: Sequence[str], origin: str, index_names: Sequence[str] | None = None):
        self.classes = list(classes)
        self.index = {name: i for i, name in enumerate(self.classes)}
        self.origin = origin  # where the label list came from, for messages
        self.index_names = list(index_names) if index_names else None

    def name(self, token: str) -> str:
        if self.index_names is not None and token.lstrip("-").isdigit() and token not in self.index:
            i = int(token)
            if not 0 <= i < len(self.index_names):
                raise ValueError(f"label index {i} is out of range: data.labels_file has {len(self.index_names)} "
                                 f"names (0-{len(self.index_names) - 1})")
            return self.index_names[i]
        return token

    def resolve(self, row: Row, multi_label: bool) -> int | tuple[float, ...]:
        """The row's target (a class index, or 0/1 per label); ValueError says why it has none."""
        if not row.text:
            raise ValueError("empty sentence")
        if not row.labels and not multi_label:
            raise ValueError("no label")
        indices = []
        for token in row.labels:
            name = self.name(token)
            if name not in self.index:
                shown = ", ".join(self.classes[:6]) + (" ..." if len(self.classes) > 6 else "")
                raise ValueError(f"unknown label {name!r} (the labels are those of {self.origin}: {shown})")
            indices.append(self.index[name])
        if not multi_label:
            return indices[0]
        hot = [0.0] * len(self.classes)
        for i in indices:
            hot[i] = 1.0
        return tuple(hot)


def resolve_rows(rows: Iterable[Row], resolver: LabelResolver, multi_label: bool
                 ) -> tuple[list[tuple[str, str, Any]], dict[str, str]]:
    """(where, text, target) of the rows whose labels resolve, and {where: reason} of the others."""
    good, bad = [], {}
    for row in rows:
        try:
            good.append((row.where, row.text, resolver.resolve(row, multi_label)))
        except ValueError as e:
            bad[row.where] = str(e)
    return good, bad


def stratum(example: TextExample) -> int:
    """What the validation hold-out is stratified by: the label (multi-label: the first label, -1 for none)."""
    target = example.target
    if isinstance(target, tuple):
        return next((i for i, v in enumerate(target) if v), -1)
    return int(target)


class TextClassificationData(TextData):
    """Train/val sentences of text classification. With `meta` (evaluate, export) the labels, tokenizer and
    multi-label switch are the model's."""

    def __init__(self, spec: TextClassificationSpec, tokenizer: TextTokenizer, meta: ModelMeta | None = None):
        d = spec.data
        self.spec = spec
        self.multi_label = bool(meta.arch.get("multi_label")) if meta is not None else spec.model.multi_label
        self.has_train = bool(d.train_file)
        index_names = read_label_names(d.labels_file) if d.labels_file else None
        train = read_rows(d.train_file, "data.train_file", d, self.multi_label) if d.train_file else None
        if meta is not None:
            classes, origin = list(meta.classes), "the model"
        elif d.labels or index_names or train is not None:
            classes, origin = label_names(d, index_names, [train] if train else [], "data.train_file")
        else:
            raise SpecError("data.train_file is not set; training needs it, e.g. data.train_file=train.tsv")
        if len(set(classes)) != len(classes):
            raise SpecError(f"{origin} names a label twice: {classes}")
        self.classes = classes
        super().__init__(tokenizer=tokenizer, target_kind="multi_hot" if self.multi_label else "class",
                         num_labels=len(classes), batch_size=spec.train.batch_size,
                         eval_batch_size=spec.evaluation.batch_size, num_workers=spec.train.num_workers,
                         seed=spec.train.seed, bucketing=d.length_bucketing,
                         spec_keys={"train": "data.train_file", "val": "data.val_file" if d.val_file else
                                    f"data.train_file (val_split={d.val_split})"})
        resolver = LabelResolver(classes, origin, index_names)
        train_examples = self._examples(train, "data.train_file", resolver) if train is not None else []
        if d.val_file:
            val = read_rows(d.val_file, "data.val_file", d, self.multi_label)
            self.val_items = self._examples(val, "data.val_file", resolver)
            self.train_items = train_examples
        else:
            self.train_items, self.val_items = split_validation(train_examples, d.val_split, spec.train.seed, stratum)
        if self.has_train and len(classes) < 2 and not self.multi_label:
            raise DataError(f"{origin} has {len(classes)} label ({', '.join(classes)}); a classifier needs at least "
                            "two (or model.multi_label=true for yes/no labels)")

    def _examples(self, read: ReadResult, key: str, resolver: LabelResolver) -> list[TextExample]:
        good, bad = resolve_rows(read.rows, resolver, self.multi_label)
        self.record_skipped(key, {**read.bad, **bad})
        if read.blank:
            self.warnings.append(f"{key}: {read.blank} blank line(s) ignored")
            log.info(self.warnings[-1])
        return self.encode(good)

    def after_scan(self, split: str) -> None:
        if split != "train" or not self.has_train:
            return
        counts = [0] * len(self.classes)
        for example in self.train_items:
            for i in (range(len(self.classes)) if self.multi_label else [example.target]):
                if not self.multi_label or example.target[i]:
                    counts[i] += 1
        empty = [c for c, n in zip(self.classes, counts) if n == 0]
        if empty:
            self.warnings.append(f"label(s) {', '.join(empty)} have no usable training sentence; the model cannot "
                                 "learn them")
            log.warning(self.warnings[-1])
