"""The in-memory form of detection labels and predictions, shared by every format, metric and task.

Boxes are continuous pixel coordinates x1, y1, x2, y2 (x2 > x1, y2 > y1) in the image as loaded
(after EXIF orientation), like pycocotools: a box covering pixel columns 10..19 is x1=10, x2=20,
and IoU has no "+1" term.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class ImageBoxes:
    """Ground truth (scores None) or predictions (scores set) for one image."""

    image: Path
    boxes: np.ndarray  # float32 [N, 4] x1, y1, x2, y2
    labels: np.ndarray  # int64 [N], index into the dataset's class list
    scores: np.ndarray | None = None  # float32 [N] for predictions
    ignore: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # DontCare regions
    width: int | None = None
    height: int | None = None
    original_size: tuple[int, int] | None = None  # (w, h) of the file when boxes are in resized input pixels

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.ignore = np.asarray(self.ignore, dtype=np.float32).reshape(-1, 4)


@dataclass
class DataProblems:
    """Everything a reader skipped, clipped or could not use: counted per kind, each with file:line."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)  # kind -> up to 20 "file:line: message"
    unmapped_classes: dict[str, int] = field(default_factory=dict)  # label name -> objects dropped

    def add(self, kind: str, message: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < 20:
            shown.append(message)

    def as_dict(self) -> dict:
        return {"counts": self.counts, "examples": self.examples, "unmapped_classes": self.unmapped_classes}


@dataclass
class DetectionDataset:
    classes: list[str]
    items: list[ImageBoxes]
    problems: DataProblems = field(default_factory=DataProblems)
