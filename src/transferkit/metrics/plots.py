"""Pictures of metrics every task shares: the confusion-matrix heat map."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ModelError
from ..io import atomic_write_bytes
from .fonts import matplotlib_text


def save_confusion_png(matrix: np.ndarray, class_names: Sequence[str], path: str | Path,
                       title: str = "Confusion matrix", cells: str = "counts", unit: str = "") -> Path:
    """Row-normalised heat map (rows true, columns predicted), written atomically.

    `cells="counts"` writes each cell's count; `"percent"` its share of the row, for counts too large to fit
    (pixels); `unit` ("px") adds each row's total to its label.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix, dtype=np.int64)
    names = list(class_names)
    n = len(names)
    if matrix.shape != (n, n):
        raise ModelError(f"confusion matrix of shape {matrix.shape} for {n} class names")
    rows = matrix.sum(axis=1, keepdims=True)
    share = matrix / np.maximum(rows, 1)
    size = max(4.0, 0.5 * n + 2)
    with matplotlib_text([*names, title]):  # class names in any script (CJK ...), not empty boxes
        fig, ax = plt.subplots(figsize=(size, size))
        try:
            ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
            ax.set_xticks(range(n), names, rotation=90)
            ax.set_yticks(range(n), [f"{name} ({int(r)} {unit})" for name, r in zip(names, rows[:, 0])] if unit
                          else names)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.set_title(title)
            if n <= 30:
                for i in range(n):
                    for j in range(n):
                        if matrix[i, j]:
                            text = f"{100 * share[i, j]:.1f}" if cells == "percent" else str(int(matrix[i, j]))
                            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                                    color="white" if share[i, j] > 0.5 else "black")
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100)
        finally:
            plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
