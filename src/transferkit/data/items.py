"""The skipped-item protocol every DataModule follows, whatever an item is (image, audio file, text line).

An item that cannot be used never stops a run: a Dataset returns `(None, skipped_entry(where, error))`
in its place, collate functions carry those strings beside the batch, and the module or verb that
receives them counts and names them (`parse_skipped`) in the run's summary and in metrics.json.
"""
from __future__ import annotations


def skipped_entry(where, error: Exception | str) -> str:
    """How a Dataset reports an item it could not load, inside a batch (collate keeps these)."""
    return f"{where}\t{error}"


def parse_skipped(entries: list[str]) -> dict[str, str]:
    """skipped_entry strings -> {where: reason}."""
    return dict(entry.partition("\t")[::2] for entry in entries)
