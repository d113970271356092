"""Boxes land on the right pixels in the class colour; tags never crash at borders or on tiny images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferkit.vision.boxes import ImageBoxes
from transferkit.vision.draw import GROUND_TRUTH_COLOUR, SINGLE_COLOUR, boxes_grid, class_colour, draw_boxes

CLASSES = ["car", "person", "cyclist"]
GREY = (90, 90, 90)


def grey(width: int = 200, height: int = 160) -> Image.Image:
    return Image.new("RGB", (width, height), GREY)


def test_box_edges_have_the_class_colour_and_far_pixels_are_unchanged():
    image = grey()
    out = draw_boxes(image, [[40, 60, 120, 140], [150, 70, 190, 100]], [1, 2], CLASSES)
    assert out.getpixel((40, 100)) == class_colour(1)  # left edge: column x1
    assert out.getpixel((119, 100)) == class_colour(1)  # right edge: column x2 - 1 (continuous box)
    assert out.getpixel((80, 139)) == class_colour(1)  # bottom edge
    assert out.getpixel((170, 99)) == class_colour(2)
    assert out.getpixel((80, 100)) == GREY  # inside the box
    assert out.getpixel((5, 155)) == GREY  # far away
    assert out.getpixel((120, 100)) == GREY  # just right of the box
    assert image.getpixel((40, 100)) == GREY  # input untouched


def test_class_colours_are_distinct_and_deterministic():
    colours = [class_colour(i) for i in range(60)]
    assert len(set(colours)) == 60
    assert colours == [class_colour(i) for i in range(60)]
    out = draw_boxes(grey(), [[40, 60, 120, 140]], [1], CLASSES, colour_by_class=False)
    assert out.getpixel((40, 100)) == SINGLE_COLOUR


def test_tag_sits_on_a_filled_background_above_the_box():
    out = np.asarray(draw_boxes(grey(), [[40, 60, 120, 140]], [0], CLASSES, scores=[0.87]))
    above = out[40:59, 40:120]  # the rows above the box top
    tag = np.all(above == class_colour(0), axis=-1)
    assert tag.sum() > 50  # filled background
    assert tag[:, 0].any()  # starts at the box's left edge
    assert np.all(out[40:59, 130:200] == GREY)  # the tag is short; the rest of those rows is untouched
    assert np.all(out[:30] == GREY)  # and it sits right above the box, not higher


def test_tag_moves_inside_the_image_at_the_top_and_right_edges():
    # A narrow box in the top-right corner: the tag goes below the top edge and shifts left to fit.
    out = np.asarray(draw_boxes(grey(), [[185, 0, 200, 40]], [1], CLASSES, scores=[0.5]))
    tag = np.all(out == class_colour(1), axis=-1)
    assert tag[2:6, 186:199].mean() > 0.3  # inside the box, under its top edge
    assert tag[2:6, 160:185].any()  # left of the box: shifted so the whole tag is in the image
    assert not tag[12:, 150:185].any()  # and nowhere else


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (8, 8), (40, 12)])
def test_tiny_images_and_boxes_off_the_border_do_not_crash(size):
    boxes = [[-20, -20, 5, 5], [0, 0, size[0], size[1]], [size[0] - 1, size[1] - 1, size[0] + 30, size[1] + 30],
             [500, 500, 600, 600], [2.4, 2.4, 2.6, 2.6]]
    gt = ImageBoxes(Path("x.png"), [[0, 0, size[0], size[1]]], [0], ignore=[[-5, -5, 2, 2]])
    out = draw_boxes(Image.new("L", size), boxes, [0, 1, 2, 0, 1], CLASSES, scores=[0.9, 0.8, 0.7, 0.6, 0.5],
                     ground_truth=gt)
    assert out.size == size and out.mode == "RGB"


def test_ground_truth_is_dashed_white():
    gt = ImageBoxes(Path("x.png"), [[40, 60, 120, 140]], [0])
    out = np.asarray(draw_boxes(grey(), [], [], CLASSES, ground_truth=gt))
    left_edge = np.all(out[60:140, 40] == GROUND_TRUTH_COLOUR, axis=-1)
    assert 0.3 < left_edge.mean() < 0.9  # dashes and gaps
    assert np.all(out[100, 80] == GREY)


def test_boxes_grid_is_a_chw_tensor_in_unit_range():
    images = [grey(200, 160), grey(64, 128), grey(4, 4)]
    preds = [ImageBoxes(Path("a"), [[40, 60, 120, 140]], [1], scores=[0.9]), None,
             ImageBoxes(Path("c"), [[0, 0, 2, 2], [1, 1, 3, 3]], [0, 2], scores=[0.1, 0.8])]
    gts = [ImageBoxes(Path("a"), [[40, 60, 120, 140]], [1]), None, None]
    grid = boxes_grid(images, CLASSES, preds, gts, columns=2, cell_size=100)
    assert grid.shape == (3, 200, 200)  # 2 x 2 cells of 100 x 100
    assert grid.dtype.is_floating_point and 0.0 <= float(grid.min()) and float(grid.max()) <= 1.0
    # First cell: box scaled by 0.5 -> left edge at column 20, in the class colour.
    assert tuple(round(float(v) * 255) for v in grid[:, 50, 20]) == class_colour(1)
