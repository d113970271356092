"""Labelled image lists: an ImageFolder tree (one sub-folder per class) or a `path,label` CSV.

Readers only list files; nothing is decoded here (VisionData checks each image before its split is
first used). What a reader cannot use (a CSV row without two fields, a missing file, a file
without an image extension) is kept in `Samples.skipped` with its reason, never silently dropped.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from ..data.names import class_name_problem
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
    """One sub-folder per class. With `classes` given, folders map onto that order.

    Hidden folders (names starting with '.', e.g. .ipynb_checkpoints) are not classes; each one left out is
    noted in `warnings`."""
    subfolders = sorted(p for p in root.iterdir() if p.is_dir())
    folders = [p for p in subfolders if not p.name.startswith(".")]
    hidden = [p.name for p in subfolders if p.name.startswith(".")]
    if not folders:
        raise DataError(f"{key}: {root} has no class sub-folders; expected {root}/<class>/<image files>"
                        + (f" (hidden folders are not classes: {', '.join(map(repr, hidden))})" if hidden else ""))
    for folder in folders:
        problem = class_name_problem(folder.name)
        if problem:
            raise DataError(f"{key}: class folder {str(folder)!r} has a name that {problem}; rename the folder")
    names = [f.name for f in folders]
    if classes is None:
        classes = names
    _check_given_classes(classes)
    index = {c.lower(): i for i, c in enumerate(classes)}
    samples = Samples(items=[], classes=list(classes))
    if hidden:
        samples.warnings.append(f"{key}: left out hidden folder(s) {', '.join(map(repr, hidden))} of {root} (names "
                                "starting with '.' are not classes); rename a folder to train on its images")
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
    # csv reads the text itself, so a quoted label that holds a line break stays one field (refused below).
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str], int]] = []  # (line the row starts on, fields, line it ends on)
    try:
        for row in reader:
            rows.append((rows[-1][2] + 1 if rows else 1, row, reader.line_num))
    except csv.Error as e:
        raise DataError(f"{key}: {path}:{reader.line_num}: not valid CSV ({e}); fix the line") from None
    if not rows or [c.strip().lower() for c in rows[0][1][:2]] != ["path", "label"]:
        raise DataError(f"{key}: {path}:1: expected a header line 'path,label'")
    parsed: list[tuple[int, Path, str]] = []
    skipped: dict[str, str] = {}
    for line_no, row, _ in rows[1:]:
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
    for line_no, _, label in parsed:
        problem = class_name_problem(label)
        if problem:
            raise DataError(f"{key}: {path}:{line_no}: label {label!r} {problem}")
    names = sorted({label for _, _, label in parsed})
    if classes is None:
        classes = names
    _check_given_classes(classes)
    index = {c.lower(): i for i, c in enumerate(classes)}
    samples = Samples(items=[], classes=list(classes), skipped=skipped)
    for line_no, image, label in parsed:
        if label.lower() not in index:
            raise DataError(f"{key}: {path}:{line_no}: label '{label}' is not among the training classes {classes}")
        samples.items.append((image, index[label.lower()]))
    return samples


def _check_given_classes(classes: list[str]) -> None:
    """The trained class list (data.classes, or a model's classes) holds only names a class can have."""
    for i, name in enumerate(classes):
        problem = class_name_problem(str(name))
        if problem:
            raise DataError(f"data.classes[{i}] is {name!r}, which {problem}")
