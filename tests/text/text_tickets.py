"""Templated support tickets for the text tests: three labels, several templates and fillers each, so a model must
read the words (not the length or one fixed token) to tell them apart."""
from __future__ import annotations

import random
from pathlib import Path

LABELS = ("billing", "shipping", "technical")

TEMPLATES = {
    "billing": ["I was charged twice for my {thing} this month", "Please refund the {thing} payment on my card",
                "Why is my invoice for the {thing} higher than last time", "The {thing} subscription fee looks wrong",
                "Can I get a receipt for the {thing} I paid for"],
    "shipping": ["My {thing} has not arrived yet", "The parcel with my {thing} was delivered to the wrong address",
                 "When will the {thing} be shipped", "The courier lost my {thing} order",
                 "Tracking for the {thing} has not updated in a week"],
    "technical": ["The {thing} app crashes when I open it", "I cannot log in to the {thing} dashboard",
                  "The {thing} shows an error after the update", "My {thing} keeps disconnecting from wifi",
                  "The {thing} screen freezes every few minutes"],
}
THINGS = ["phone", "laptop", "router", "headphones", "camera", "printer", "tablet", "speaker", "watch", "monitor"]


def tickets(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """`count` (sentence, label) pairs, labels in turn."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        label = LABELS[i % len(LABELS)]
        rows.append((rng.choice(TEMPLATES[label]).format(thing=rng.choice(THINGS)), label))
    return rows


def write_tsv(path: Path, rows: list[tuple[str, str]], header: bool = False) -> Path:
    path.write_text(("sentence\tlabel\n" if header else "") + "".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")
    return path

