"""Pictures a person wants next to the weights: labelled prediction grids (confusion matrices: metrics/plots.py)."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from ...metrics.fonts import pil_font


def draw_caption(image: Image.Image, text: str, good: bool | None = None) -> Image.Image:
    image = image.convert("RGB")
    draw = ImageDraw.Draw(image)
    colour = (40, 200, 40) if good or good is None else (230, 40, 40)
    font = pil_font(10, text)  # Pillow's default size; another font when the class name needs one (CJK ...)
    box = draw.textbbox((0, 0), text, font=font)
    draw.rectangle((0, 0, box[2] + 4, box[3] + 4), fill=(0, 0, 0))
    draw.text((2, 2), text, fill=colour, font=font)
    return image


def labelled_grid(images: torch.Tensor, texts: list[str], mean, std, correct: list[bool] | None = None,
                  columns: int = 4, min_cell: int = 96) -> torch.Tensor:
    """[N,3,H,W] normalised batch -> [3,H',W'] grid in [0,1] with a caption on each cell."""
    grid = labelled_grid_image(images, texts, mean, std, correct, columns, min_cell)
    return torch.from_numpy(np.asarray(grid).copy()).permute(2, 0, 1).float() / 255


def labelled_grid_image(images: torch.Tensor, texts: list[str], mean, std, correct: list[bool] | None = None,
                        columns: int = 4, min_cell: int = 96) -> Image.Image:
    """[N,3,H,W] normalised batch -> one RGB picture: the images in a grid, a caption on each cell.

    Called once per validation epoch while training, so the pixels go back to 8 bits in numpy (one
    single-threaded pass): the same arithmetic in torch ops took 40-70 ms on a busy 2-core CPU, where
    every multi-threaded op waits for a descheduled thread.
    """
    arrays = _to_uint8_hwc(images, mean, std)
    cells = []
    for i, arr in enumerate(arrays):
        pil = Image.fromarray(arr)
        if pil.width < min_cell:
            pil = pil.resize((min_cell, min_cell * pil.height // pil.width), Image.NEAREST)
        cells.append(draw_caption(pil, texts[i], None if correct is None else correct[i]))
    w, h = cells[0].size
    rows = (len(cells) + columns - 1) // columns
    grid = Image.new("RGB", (w * min(columns, len(cells)), h * rows))
    for i, cell in enumerate(cells):
        grid.paste(cell, ((i % columns) * w, (i // columns) * h))
    return grid


def _to_uint8_hwc(images: torch.Tensor, mean, std) -> np.ndarray:
    """Normalised [N,3,H,W] -> [N,H,W,3] uint8, as denormalise() then x255 and truncation did."""
    x = images.detach().float().cpu().numpy()
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    x = np.clip(x * s + m, 0.0, 1.0) * np.float32(255)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).astype(np.uint8)
