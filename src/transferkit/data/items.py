"""The skipped-item protocol every DataModule follows, whatever an item is (image, audio file, text line).

An item that cannot be used never stops a run: a Dataset returns `(None, skipped_entry(where, error))`
in its place, collate functions put those strings LAST in the batch they build, and whoever receives
the batch counts and names them (`parse_skipped`, `usable_batches`) in the run's summary and in
metrics.json under `skipped_<item kind>`.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Iterator

from torch.utils.data import default_collate

log = logging.getLogger("transferkit")


def skipped_entry(where, error: Exception | str) -> str:
    """How a Dataset reports an item it could not load, inside a batch (collate keeps these)."""
    return f"{where}\t{error}"


def parse_skipped(entries: list[str]) -> dict[str, str]:
    """skipped_entry strings -> {where: reason}."""
    return dict(entry.partition("\t")[::2] for entry in entries)


def collate_skipping(samples: list[tuple]) -> tuple:
    """Samples `(field, ...)` or `(None, skipped_entry)` -> `(*collated fields, skipped entries)`.

    The usable samples go through torch's default_collate; when none is usable every field is None."""
    good = [s for s in samples if s[0] is not None]
    bad = [s[1] for s in samples if s[0] is None]
    if not good:
        return (*([None] * len(samples[0])), bad)
    return (*default_collate(good), bad)


def has_items(batch: tuple) -> bool:
    """Whether a collated batch (skipped entries last) holds at least one usable item."""
    first = batch[0]
    return first is not None and len(first) > 0


def usable_batches(batches: Iterable[tuple], skipped: dict[str, str]) -> Iterator[tuple]:
    """The batches of a skipping loader without their last field, those with no usable item left out.

    Every skipped item is added to `skipped` ({where: reason}) and logged once."""
    for batch in batches:
        for where, reason in parse_skipped(batch[-1]).items():
            if where not in skipped:
                log.warning("skipped %s", reason if reason.startswith(where) else f"{where}: {reason}")
            skipped[where] = reason
        if has_items(batch):
            yield batch[:-1]


def skipped_report(skipped: dict[str, str]) -> dict[str, Any]:
    """What metrics.json and inference.json hold under `skipped_<item kind>`."""
    return {"count": len(skipped), "files": dict(skipped)}
