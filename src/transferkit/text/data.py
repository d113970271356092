"""Text data shared by the text tasks: tokenized examples, dynamic padding, length-bucketed training batches,
and reading text files line by line so that one bad line is named (file:line) instead of stopping the run.

An example is tokenized once, when the data is read (a few thousand sentences take well under a second);
batches are padded to their own longest sentence, and training batches are drawn from sentences of similar
length (data.buckets), so little compute goes into padding.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch.utils.data import DataLoader

from ..data.buckets import bucketed_loader
from ..data.module import TaskData
from ..errors import DataError
from ..io import atomic_write_text
from ..spec import require_path
from .tokenizer import TextTokenizer

IGNORE_INDEX = -100  # token targets the loss skips (padding, special tokens, a word's later pieces)
TARGET_KINDS = ("class", "multi_hot", "tokens")


@dataclass(frozen=True)
class TextExample:
    """One tokenized input. `target`: a class index ("class"; inference: the input's position), a tuple of 0/1
    per label ("multi_hot"), or one label id per token with IGNORE_INDEX where no label applies ("tokens")."""

    where: str  # file:line, how the example is named in messages and skipped lists
    ids: tuple[int, ...]
    target: Any
    text: str = ""


# -- reading files ----------------------------------------------------------------------------------

def read_lines(path: str | Path, key: str) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, text, None) per line of a UTF-8 file, or (line number, None, why) for a line that is not
    UTF-8: one bad byte costs one line. A BOM and Windows line ends are dropped. A missing file is a DataError
    naming the spec key."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{key}: file {path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{key}: {path} is a folder; give a file") from None
    except OSError as e:
        raise DataError(f"{key}: {path} cannot be read ({type(e).__name__})") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, line in enumerate(lines, 1):
        try:
            yield number, line.decode("utf-8").removesuffix("\r"), None
        except UnicodeDecodeError as e:
            yield number, None, f"not UTF-8 text (byte 0x{line[e.start]:02x} at column {e.start + 1}); save the file as UTF-8"


def decode_surrogates(text: str) -> str | None:
    """Why `text` (decoded with errors='surrogateescape') is not UTF-8, or None when it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"not UTF-8 text (byte 0x{ord(text[e.start]) & 0xff:02x}); save the file as UTF-8"
    return None


@dataclass
class LineReport:
    """What reading a file line by line passed over: {file:line: reason} of unusable lines, and blank lines."""

    bad: dict[str, str] = field(default_factory=dict)
    blank: int = 0


def content_lines(path: Path, key: str, report: LineReport) -> Iterator[tuple[int, str]]:
    """(line number, text) of every non-blank UTF-8 line of `path`; lines that are not UTF-8 go into report.bad,
    blank lines are counted in report.blank."""
    for number, line, problem in read_lines(path, key):
        if problem:
            report.bad[f"{path}:{number}"] = problem
        elif not line.strip():
            report.blank += 1
        else:
            yield number, line


def json_line(line: str) -> tuple[Any, str | None]:
    """(value, None) of a JSON line, or (None, why it is not JSON)."""
    try:
        return json.loads(line), None
    except json.JSONDecodeError as e:
        return None, f"not JSON ({e.msg} at column {e.colno})"


JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")


def read_inference_inputs(cfg: Any) -> tuple[list[tuple[str, str]], LineReport]:
    """(file:line, text) of every input of inference.file (`cfg`: a text.spec.TextInferenceConfig): one per line of
    a text file, or the `cfg.text_field` of each JSON line; unusable and blank lines go into the LineReport."""
    path = require_path("inference.file", cfg.file, "file")
    fmt = cfg.format if cfg.format != "auto" else ("jsonl" if path.suffix.lower() in JSONL_SUFFIXES else "text")
    inputs, report = [], LineReport()
    for number, line in content_lines(path, "inference.file", report):
        where = f"{path}:{number}"
        if fmt == "text":
            inputs.append((where, line.strip()))
            continue
        record, problem = json_line(line)
        text = record.get(cfg.text_field) if isinstance(record, dict) else None
        if problem is None and (not isinstance(text, str) or not text.strip()):
            problem = (f"no {cfg.text_field!r} text field (inference.text_field)" if not isinstance(text, str)
                       else "empty text")
        if problem:
            report.bad[where] = problem
        else:
            inputs.append((where, text.strip()))
    return inputs, report


def no_token(text: str) -> str:
    """The reason an input the tokenizer finds no token in is skipped."""
    return f"the tokenizer finds no token in {text[:40]!r}"


# -- batches ----------------------------------------------------------------------------------------

class TextCollate:
    """Examples -> (input_ids [N, L] int64, attention_mask [N, L] int64, targets, skipped entries), padded to the
    batch's longest example. Samples `(None, skipped_entry)` are passed on last, as data/items.py says."""

    def __init__(self, pad_id: int, target_kind: str, num_labels: int = 0):
        if target_kind not in TARGET_KINDS:
            raise ValueError(f"target_kind must be one of {TARGET_KINDS}, got {target_kind!r}")
        self.pad_id, self.target_kind, self.num_labels = int(pad_id), target_kind, int(num_labels)

    def __call__(self, samples: Sequence[TextExample | tuple]) -> tuple:
        good = [s for s in samples if isinstance(s, TextExample)]
        bad = [s[1] for s in samples if not isinstance(s, TextExample)]
        if not good:
            return None, None, None, bad
        length = max(len(e.ids) for e in good)
        ids = torch.full((len(good), length), self.pad_id, dtype=torch.int64)
        mask = torch.zeros((len(good), length), dtype=torch.int64)
        for row, example in enumerate(good):
            ids[row, :len(example.ids)] = torch.tensor(example.ids, dtype=torch.int64)
            mask[row, :len(example.ids)] = 1
        if self.target_kind == "class":
            targets = torch.tensor([int(e.target) for e in good], dtype=torch.int64)
        elif self.target_kind == "multi_hot":
            targets = torch.tensor([list(e.target) for e in good], dtype=torch.float32).reshape(len(good), self.num_labels)
        else:
            targets = torch.full((len(good), length), IGNORE_INDEX, dtype=torch.int64)
            for row, example in enumerate(good):
                targets[row, :len(example.target)] = torch.tensor(example.target, dtype=torch.int64)
        return ids, mask, targets, bad


class TextData(TaskData):
    """TaskData for tokenized text: `train_items` / `val_items` are TextExamples, batches are
    (input_ids, attention_mask, targets), and training batches are length-bucketed when `bucketing`."""

    item_kind = "sentences"

    def __init__(self, *, tokenizer: TextTokenizer, target_kind: str, num_labels: int, batch_size: int,
                 eval_batch_size: int, num_workers: int = 0, seed: int = 0, bucketing: bool = True,
                 spec_keys: dict[str, str] | None = None):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers,
                         spec_keys=spec_keys)
        self.tokenizer = tokenizer
        self.target_kind, self.num_labels = target_kind, num_labels
        self.seed, self.bucketing = seed, bucketing

    def encode(self, rows: Sequence[tuple[str, str, Any]]) -> list[TextExample]:
        """(where, text, target) rows -> TextExamples, tokenized in one batch."""
        encodings = self.tokenizer.encode([text for _, text, _ in rows])
        return [TextExample(where, tuple(e.ids), target, text) for (where, text, target), e in zip(rows, encodings)]

    def make_dataset(self, items: list, train: bool) -> list:
        return items  # a list of TextExamples is a map-style dataset: tokenized already

    def collate_fn(self, train: bool) -> Callable[[list], tuple]:
        return TextCollate(self.tokenizer.pad_id, self.target_kind, self.num_labels)

    def where(self, item: TextExample) -> str:
        return item.where

    def find_unusable(self, items: list) -> dict[str, str]:
        floor = self.tokenizer.special_token_count()
        return {e.where: f"{e.where}: {no_token(e.text)}" for e in items if len(e.ids) <= floor}

    def model_inputs(self, batch: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        return batch[0], batch[1]

    def loader(self, items: list, train: bool, batch_size: int) -> DataLoader:
        """Training batches of similar lengths when `bucketing`: resumable mid-epoch in a single process (as the
        core's loaders are), sharded by LengthBucketSampler under DDP."""
        if not (train and self.bucketing):
            return super().loader(items, train, batch_size)
        lengths = [len(e.ids) for e in items]
        settings = dict(collate_fn=self.collate_fn(train), drop_last=len(items) > batch_size,
                        num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                        pin_memory=torch.cuda.is_available())
        return bucketed_loader(self.make_dataset(items, train), lengths, batch_size, self.seed, **settings)


def write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """One JSON object per line (UTF-8 text kept as is), written atomically."""
    return atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
