"""Class names: what every reader of class names (folders, CSV labels, label files, names files, COCO
categories, spec lists) accepts.

A class name is one line of printable text. Spaces and any script are fine; control characters are not:
a newline in a name makes a names file one line longer (shifting every later class id when it is read
back), and escape sequences would reach terminals and logs. Readers refuse such a name where they read
it, naming the file and the line, folder or category.
"""
from __future__ import annotations

import unicodedata

# Cc: C0/C1 controls (tab, newline, escape, DEL ...); Zl, Zp: the line and paragraph separators that
# str.splitlines() also breaks lines at.
_BAD_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def class_name_problem(name: str) -> str | None:
    """Why `name` cannot be a class name, as the end of a sentence ("holds a control character ..."); None if it can."""
    for char in name:
        if unicodedata.category(char) in _BAD_CATEGORIES:
            return (f"holds a control character ({char!r}, U+{ord(char):04X}); class names must be one line of "
                    "printable text")
    return None
