"""Pictures a person wants next to the weights: labelled prediction grids, confusion matrices."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ...data.draw import denormalise
from ...io import atomic_write_bytes


def draw_caption(image: Image.Image, text: str, good: bool | None = None) -> Image.Image:
    image = image.convert("RGB")
    draw = ImageDraw.Draw(image)
    colour = (40, 200, 40) if good or good is None else (230, 40, 40)
    box = draw.textbbox((0, 0), text)
    draw.rectangle((0, 0, box[2] + 4, box[3] + 4), fill=(0, 0, 0))
    draw.text((2, 2), text, fill=colour)
    return image


def labelled_grid(images: torch.Tensor, texts: list[str], mean, std, correct: list[bool] | None = None,
                  columns: int = 4, min_cell: int = 96) -> torch.Tensor:
    """[N,3,H,W] normalised batch -> [3,H',W'] grid in [0,1] with a caption on each cell."""
    images = denormalise(images, mean, std)
    cells = []
    for i, img in enumerate(images):
        arr = (img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        pil = Image.fromarray(arr)
        if pil.width < min_cell:
            pil = pil.resize((min_cell, min_cell * pil.height // pil.width), Image.NEAREST)
        cells.append(draw_caption(pil, texts[i], None if correct is None else correct[i]))
    w, h = cells[0].size
    rows = (len(cells) + columns - 1) // columns
    grid = Image.new("RGB", (w * min(columns, len(cells)), h * rows))
    for i, cell in enumerate(cells):
        grid.paste(cell, ((i % columns) * w, (i // columns) * h))
    return torch.from_numpy(np.asarray(grid).copy()).permute(2, 0, 1).float() / 255


def save_confusion_png(matrix: np.ndarray, classes: list[str], path: Path, title: str = "Confusion matrix") -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    row_sums = matrix.sum(axis=1, keepdims=True).clip(min=1)
    ax.imshow(matrix / row_sums, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=90)
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if matrix[i, j] / row_sums[i, 0] > 0.5 else "black")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
