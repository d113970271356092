"""Boxes drawn onto images, for prediction grids in TensorBoard and for saved inference pictures.

Boxes are continuous x1, y1, x2, y2 pixels (data/boxes.py): x1=10, x2=20 covers pixel columns
10..19, so the outline is drawn on columns 10 and 19 and grows inwards with the line width.
"""
from __future__ import annotations

import colorsys

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..metrics.fonts import pil_font
from .boxes import ImageBoxes

# Twenty well-separated colours (the Ultralytics palette) for the first classes; golden-ratio hues after.
_PALETTE = ["FF3838", "FF9D97", "FF701F", "FFB21D", "CFD231", "48F90A", "92CC17", "3DDB86", "1A9334", "00D4BB",
            "2C99A8", "00C2FF", "344593", "6473FF", "0018EC", "8438FF", "520085", "CB38FF", "FF95C8", "FF37C7"]
SINGLE_COLOUR = (0, 255, 0)  # every prediction when colour_by_class=False
GROUND_TRUTH_COLOUR = (255, 255, 255)
IGNORE_COLOUR = (128, 128, 128)


def class_colour(index: int) -> tuple[int, int, int]:
    """The same RGB colour for a class index in every picture."""
    if index < len(_PALETTE):
        code = _PALETTE[index]
        return int(code[0:2], 16), int(code[2:4], 16), int(code[4:6], 16)
    r, g, b = colorsys.hsv_to_rgb((index * 0.618033988749895) % 1.0, 0.75, 0.95)
    return round(r * 255), round(g * 255), round(b * 255)


def _pixel_rect(box, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Inclusive pixel rectangle of a continuous box, clipped to the image; None when outside it."""
    x1, y1 = max(round(float(box[0])), 0), max(round(float(box[1])), 0)
    x2, y2 = min(round(float(box[2])) - 1, width - 1), min(round(float(box[3])) - 1, height - 1)
    if x1 > width - 1 or y1 > height - 1 or x2 < 0 or y2 < 0:
        return None
    return x1, y1, max(x2, x1), max(y2, y1)


def _dashed_rect(draw: ImageDraw.ImageDraw, rect: tuple[int, int, int, int], colour, dash: int = 4, gap: int = 3):
    x1, y1, x2, y2 = rect
    for a, b, fixed, horizontal in ((x1, x2, y1, True), (x1, x2, y2, True), (y1, y2, x1, False), (y1, y2, x2, False)):
        for start in range(a, b + 1, dash + gap):
            end = min(start + dash - 1, b)
            draw.line((start, fixed, end, fixed) if horizontal else (fixed, start, fixed, end), fill=colour)


def _draw_label(draw: ImageDraw.ImageDraw, text: str, rect, colour, size: int, image_size: tuple[int, int]) -> None:
    """Filled tag above the box; inside its top edge when there is no room above; kept in the image."""
    width, height = image_size
    font = pil_font(size, text)  # a font that has the class name's characters (CJK ...)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = 2
    tag_w, tag_h = right - left + 2 * pad, bottom - top + 2 * pad
    x = min(rect[0], max(width - tag_w, 0))
    y = rect[1] - tag_h if rect[1] - tag_h >= 0 else min(rect[1], max(height - tag_h, 0))
    draw.rectangle((x, y, x + tag_w - 1, y + tag_h - 1), fill=colour)
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    draw.text((x + pad - left, y + pad - top), text, fill=(0, 0, 0) if luminance > 140 else (255, 255, 255), font=font)


def draw_boxes(image: Image.Image, boxes, labels, classes: list[str], scores=None, colour_by_class: bool = True,
               ground_truth: ImageBoxes | None = None) -> Image.Image:
    """A copy of `image` with each box outlined and tagged "name 0.87"; GT (if given) dashed white.

    Higher-scored boxes are drawn last, so they stay on top; ignore regions of `ground_truth` are
    dashed grey. The input image is not modified.
    """
    out = image.convert("RGB")  # always a new image
    width, height = out.size
    draw = ImageDraw.Draw(out)
    line = max(1, round(min(width, height) / 250))
    font_size = max(9, min(24, round(min(width, height) / 40)))

    if ground_truth is not None:
        for regions, colour in ((ground_truth.ignore, IGNORE_COLOUR), (ground_truth.boxes, GROUND_TRUTH_COLOUR)):
            for box in regions:
                rect = _pixel_rect(box, width, height)
                if rect is not None:
                    _dashed_rect(draw, rect, colour)

    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    order = np.argsort(np.asarray(scores), kind="stable") if scores is not None else np.arange(len(boxes))
    tags = []
    for i in order:
        rect = _pixel_rect(boxes[i], width, height)
        if rect is None:
            continue
        label = int(labels[i])
        colour = class_colour(label) if colour_by_class else SINGLE_COLOUR
        draw.rectangle(rect, outline=colour, width=line)
        name = classes[label] if 0 <= label < len(classes) else str(label)
        tags.append((f"{name} {float(scores[i]):.2f}" if scores is not None else name, rect, colour))
    for text, rect, colour in tags:  # after every outline, so no outline crosses a tag
        _draw_label(draw, text, rect, colour, font_size, (width, height))
    return out


def boxes_grid(images: list[Image.Image], classes: list[str], predictions: list[ImageBoxes | None] | None = None,
               ground_truth: list[ImageBoxes | None] | None = None, columns: int = 4, cell_size: int = 320,
               min_score: float = 0.25):
    """Images with their boxes in a grid -> float tensor [3, H, W] in [0, 1] for TensorBoard.

    Each image is scaled to fit a `cell_size` square before drawing, so tags stay readable; boxes
    are scaled with it. Predictions scoring below `min_score` are left out.
    """
    import torch

    if not images:
        raise ValueError("boxes_grid needs at least one image")
    cells = []
    for i, image in enumerate(images):
        scale = cell_size / max(image.width, image.height)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        resized = image.convert("RGB").resize(size, Image.BILINEAR if scale < 1 else Image.NEAREST)
        # Scale per axis, as rounding the size changes the aspect ratio slightly.
        factor = np.array([size[0] / image.width, size[1] / image.height] * 2, np.float32)
        pred = predictions[i] if predictions is not None else None
        gt = ground_truth[i] if ground_truth is not None else None
        if gt is not None:
            gt = ImageBoxes(gt.image, gt.boxes * factor, gt.labels, ignore=gt.ignore * factor)
        boxes, labels, scores = np.zeros((0, 4)), np.zeros(0, np.int64), None
        if pred is not None:
            keep = pred.scores >= min_score if pred.scores is not None else np.ones(len(pred.boxes), bool)
            boxes, labels = pred.boxes[keep] * factor, pred.labels[keep]
            scores = pred.scores[keep] if pred.scores is not None else None
        cells.append(draw_boxes(resized, boxes, labels, classes, scores, ground_truth=gt))
    cell_w, cell_h = max(c.width for c in cells), max(c.height for c in cells)
    columns = min(columns, len(cells))
    rows = (len(cells) + columns - 1) // columns
    grid = Image.new("RGB", (cell_w * columns, cell_h * rows))
    for i, cell in enumerate(cells):
        grid.paste(cell, ((i % columns) * cell_w, (i // columns) * cell_h))
    return torch.from_numpy(np.asarray(grid).copy()).permute(2, 0, 1).float() / 255


def denormalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """Normalised [N, 3, H, W] network inputs -> [0, 1] pixel values."""
    mean = torch.tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return (images * std + mean).clamp(0, 1)


def to_pil_images(images: torch.Tensor, mean, std) -> list[Image.Image]:
    """Normalised [N, 3, H, W] network inputs -> the RGB pictures they came from."""
    arrays = (denormalise(images.float(), mean, std).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arrays]

