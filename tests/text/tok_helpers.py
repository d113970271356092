"""Helpers of the token_classification tests: the CLI call, a tiny random BERT as spec overrides, and small entity
files from the `entities` demo."""
from __future__ import annotations

from pathlib import Path

from transferkit.cli import main
from transferkit.data.demo import build_demo

TASK = "token_classification"

# A tiny random BERT with MiniLM's tokenizer and vocabulary: trains in seconds (as text_classification's tests do).
TINY = ["model.pretrained=false",
        "model.config_overrides={num_hidden_layers: 1, hidden_size: 32, num_attention_heads: 2, intermediate_size: 64}",
        "train.learning_rate=1e-2", "train.backbone_lr_scale=1", "train.batch_size=8", "train.histograms=false"]


def tkit(*args) -> int:
    return main([str(a) for a in args])


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
