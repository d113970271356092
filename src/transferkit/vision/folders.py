"""Labelled image lists: an ImageFolder tree (one sub-folder per class) or a `path,label` CSV.

Readers only list files; nothing is decoded here (VisionData checks each image before its split is
first used). What a reader cannot use (a CSV row without two fields, a missing file, a file
without an image extension) is kept in `Samples.skipped` with its reason, never silently dropped.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .images import IMAGE_EXTENSIONS, list_images


@dataclass
class Samples:
    """(path, class index) pairs plus everything that was skipped while reading them."""

    items: list[tuple[Path, int]]
    classes: list[str]
    skipped: dict[str, str] = field(default_factory=dict)  # path or csv:line -> reason
    warnings: list[str] = field(default_factory=list)


def read_image_folder(root: Path, key: str, classes: list[str] | None = None) -> Samples:
    """One sub-folder per class. With `classes` given, folders map onto that order."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{key}: {root} has no class sub-folders; expected {root}/<class>/<image files>")
    names = [f.name for f in folders]
    if classes is None:
        classes = names
    index = {c.lower(): i for i, c in enumerate(classes)}
    samples = Samples(items=[], classes=list(classes))
    for folder in folders:
        if folder.name.lower() not in index:
            raise DataError(
                f"{key}: class folder '{folder.name}' is not among the training classes {classes}; "
                "remove it or train with it"
            )
        images = list_images(folder)
        ignored = [p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in IMAGE_EXTENSIONS]
        for p in ignored:
            samples.skipped[str(p)] = f"not an image extension ({', '.join(sorted(IMAGE_EXTENSIONS))})"
        if not images:
            samples.warnings.append(f"{key}: class folder {folder} has no images")
        samples.items.extend((p, index[folder.name.lower()]) for p in images)
    return samples


def read_csv_list(path: Path, key: str, classes: list[str] | None = None) -> Samples:
    """CSV with a `path,label` header; relative paths are relative to the CSV's folder."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{key}: {path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from e
    rows = list(csv.reader(text.splitlines()))
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["path", "label"]:
        raise DataError(f"{key}: {path}:1: expected a header line 'path,label'")
    parsed: list[tuple[int, Path, str]] = []
    skipped: dict[str, str] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            skipped[f"{path}:{line_no}"] = f"expected 2 fields path,label, got {len(row)}"
            continue
        image = Path(row[0].strip())
        image = image if image.is_absolute() else path.parent / image
        if not image.is_file():
            skipped[f"{path}:{line_no}"] = f"image {image} does not exist"
            continue
        parsed.append((line_no, image, row[1].strip()))
    names = sorted({label for _, _, label in parsed})
    if classes is None:
        classes = names
    index = {c.lower(): i for i, c in enumerate(classes)}
    samples = Samples(items=[], classes=list(classes), skipped=skipped)
    for line_no, image, label in parsed:
        if label.lower() not in index:
            raise DataError(f"{key}: {path}:{line_no}: label '{label}' is not among the training classes {classes}")
        samples.items.append((image, index[label.lower()]))
    return samples
