"""DetectNet_v2 target rasteriser: coverage ellipses, dead zones, overlaps, ignore regions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from transferkit.tasks.detection.detectnet_v2.spec import TargetSettings
from transferkit.tasks.detection.detectnet_v2.targets import cell_anchors, rasterise

STRIDE = 16


def decode_cell(t: dict, c: int, row: int, col: int, scale: float = 35.0, offset: float = 0.5) -> list[float]:
    b = t["bbox"][4 * c:4 * c + 4, row, col] * scale
    ax, ay = (col + offset) * STRIDE, (row + offset) * STRIDE
    return [ax - b[0].item(), ay - b[1].item(), ax + b[2].item(), ay + b[3].item()]


def test_coverage_core_and_dead_zone_ring_follow_the_ellipse_geometry():
    # A 64 px box centred in a 96x96 image: half-size 2 cells; radius 0.5 -> a 1-cell ellipse
    # around (3, 3), dead zone 1 cell wider -> the 8 edge-adjacent cells, nothing diagonal.
    cfg = TargetSettings(cov_radius_x=0.5, cov_radius_y=0.5, bbox_min_radius=0.0, deadzone_radius=1.0)
    t = rasterise(np.array([[16, 16, 80, 80]]), np.array([0]), 1, 6, 6, STRIDE, cfg)
    core = torch.zeros(6, 6)
    core[2:4, 2:4] = 1
    ring = torch.zeros(6, 6)
    ring[1, 2:4] = ring[4, 2:4] = ring[2:4, 1] = ring[2:4, 4] = 1
    assert torch.equal(t["cov"][0], core)
    assert torch.equal(t["bbox_weight"][0], core)
    assert torch.equal(t["cov_weight"][0], 1 - ring)


def test_bbox_targets_are_edge_distances_from_the_cell_anchor_over_the_scale():
    t = rasterise(np.array([[16, 16, 80, 80]]), np.array([0]), 1, 6, 6, STRIDE, TargetSettings())
    # cell (2, 2) has its anchor at pixel (40, 40)
    expected = torch.tensor([40 - 16, 40 - 16, 80 - 40, 80 - 40]) / 35.0
    assert torch.allclose(t["bbox"][:, 2, 2], expected)
    assert decode_cell(t, 0, 3, 2) == pytest.approx([16, 16, 80, 80], abs=1e-4)
    assert t["bbox"][:, 0, 0].abs().sum() == 0  # outside coverage: no target


def test_anchor_offset_is_configurable():
    ax, ay = cell_anchors(2, 3, STRIDE, bbox_offset=0.0)
    assert ax.tolist() == [0, 16, 32] and ay.tolist() == [0, 16]
    t = rasterise(np.array([[16, 16, 80, 80]]), np.array([0]), 1, 6, 6, STRIDE, TargetSettings(), bbox_offset=0.0)
    assert decode_cell(t, 0, 2, 2, offset=0.0) == pytest.approx([16, 16, 80, 80], abs=1e-4)


def test_a_box_smaller_than_a_cell_still_owns_a_cell():
    t = rasterise(np.array([[40, 40, 46, 47]]), np.array([0]), 1, 6, 6, STRIDE, TargetSettings(bbox_min_radius=1.0))
    assert t["cov"].sum() >= 1
    row, col = torch.nonzero(t["cov"][0])[0].tolist()
    assert decode_cell(t, 0, row, col) == pytest.approx([40, 40, 46, 47], abs=1e-4)


def test_smaller_box_wins_the_cells_where_two_boxes_of_a_class_overlap():
    big, small = [0, 0, 96, 96], [40, 40, 62, 62]
    t = rasterise(np.array([small, big]), np.array([0, 0]), 1, 6, 6, STRIDE, TargetSettings(deadzone_radius=0.0))
    decoded = {tuple(np.round(decode_cell(t, 0, r, c), 3)) for r, c in torch.nonzero(t["cov"][0]).tolist()}
    assert decoded == {tuple(map(float, small)), tuple(map(float, big))}
    assert decode_cell(t, 0, 3, 3) == pytest.approx(small, abs=1e-4)  # the cell holding the small box's centre


def test_classes_are_rasterised_independently():
    a, b = [8, 8, 60, 60], [30, 30, 90, 90]
    both = rasterise(np.array([a, b]), np.array([0, 1]), 2, 6, 6, STRIDE)
    only_a = rasterise(np.array([a]), np.array([0]), 2, 6, 6, STRIDE)
    only_b = rasterise(np.array([b]), np.array([1]), 2, 6, 6, STRIDE)
    assert torch.equal(both["cov"][0], only_a["cov"][0]) and torch.equal(both["cov"][1], only_b["cov"][1])
    assert torch.equal(both["bbox"][:4], only_a["bbox"][:4]) and torch.equal(both["bbox"][4:], only_b["bbox"][4:])


def test_ignore_region_zeroes_coverage_weight_of_every_class_outside_objects():
    ignore = np.array([[0, 64, 32, 96]])  # cells rows 4-5, columns 0-1
    t = rasterise(np.zeros((0, 4)), np.zeros(0), 3, 6, 6, STRIDE, ignore=ignore)
    expected = torch.ones(3, 6, 6)
    expected[:, 4:6, 0:2] = 0
    assert torch.equal(t["cov_weight"], expected)
    assert t["cov"].sum() == 0 and t["bbox_weight"].sum() == 0

    # an object inside a DontCare region keeps its positive cells trainable
    t = rasterise(np.array([[0, 0, 48, 48]]), np.array([1]), 3, 6, 6, STRIDE, ignore=np.array([[0, 0, 96, 96]]))
    assert t["cov"][1].sum() > 0
    assert torch.equal(t["cov_weight"][1], t["cov"][1])
    assert t["cov_weight"][0].sum() == 0


def test_tiny_ignore_region_still_masks_the_cell_holding_it():
    t = rasterise(np.zeros((0, 4)), np.zeros(0), 1, 6, 6, STRIDE, ignore=np.array([[50, 20, 54, 24]]))
    assert t["cov_weight"][0, 1, 3] == 0 and t["cov_weight"].sum() == 35


def test_per_class_configs_apply_to_their_class():
    cfgs = [TargetSettings(cov_radius_x=0.2, cov_radius_y=0.2, bbox_min_radius=0.5), TargetSettings()]
    boxes = np.array([[0, 0, 96, 96], [0, 0, 96, 96]])
    t = rasterise(boxes, np.array([0, 1]), 2, 6, 6, STRIDE, cfgs)
    assert t["cov"][0].sum() < t["cov"][1].sum()
    with pytest.raises(ValueError, match="2 classes"):
        rasterise(boxes, np.array([0, 1]), 2, 6, 6, STRIDE, cfgs[:1])


def test_boxes_are_clipped_to_the_input_and_bad_labels_are_refused():
    t = rasterise(np.array([[-40, -40, 40, 40], [200, 200, 300, 300]]), np.array([0, 0]), 1, 6, 6, STRIDE)
    row, col = torch.nonzero(t["cov"][0])[0].tolist()
    assert decode_cell(t, 0, row, col) == pytest.approx([0, 0, 40, 40], abs=1e-4)
    with pytest.raises(ValueError, match="class indices 0..1"):
        rasterise(np.array([[0, 0, 10, 10]]), np.array([2]), 2, 6, 6, STRIDE)
