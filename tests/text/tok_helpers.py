"""Helpers of the token_classification tests: small entity files from the `entities` demo and CoNLL blocks (the CLI
call and the tiny BERT are text_helpers')."""
from __future__ import annotations

from pathlib import Path

from transferkit.data.demo import build_demo

TASK = "token_classification"


def entity_files(out: Path, num_train: int = 24, num_val: int = 12, num_test: int = 4) -> dict[str, Path]:
    """A small `entities` demo build: CoNLL train/val, NeMo text/labels pairs, raw test lines."""
    build_demo("entities", out, num_train=num_train, num_val=num_val, num_test=num_test)
    return {"train": out / "train.txt", "val": out / "val.txt", "test": out / "test.txt",
            "text_train": out / "text_train.txt", "labels_train": out / "labels_train.txt",
            "text_val": out / "text_val.txt", "labels_val": out / "labels_val.txt", "lines": out / "test_lines.txt"}


def conll_args(files: dict[str, Path], val: str = "val") -> list[str]:
    return [f"data.train_file={files['train']}", f"data.val_file={files[val]}"]


def read_conll_blocks(path: Path) -> list[list[tuple[str, str]]]:
    """(word, tag) pairs per sentence of a two-column CoNLL file."""
    blocks: list[list[tuple[str, str]]] = [[]]
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if blocks[-1]:
                blocks.append([])
            continue
        word, tag = line.split()
        blocks[-1].append((word, tag))
    return [b for b in blocks if b]
