"""Helpers the end-to-end CLI tests import: the CLI as a function and the detection data overrides."""
from __future__ import annotations

from pathlib import Path

from transferkit.cli import main


def run_cli(*args) -> int:
    return main([str(a) for a in args])


def detection_data_args(root: Path) -> list[str]:
    return [f"data.train_images={root / 'train/images'}", f"data.train_labels={root / 'train/labels'}",
            f"data.val_images={root / 'val/images'}", f"data.val_labels={root / 'val/labels'}"]
