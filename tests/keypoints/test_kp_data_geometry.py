"""Crop geometry: keypoints moved by the crop matrix land on what the warped crop shows; flips swap sides."""
from __future__ import annotations

import numpy as np
import pytest

from transferkit.tasks.keypoints.formats import flip_pairs
from transferkit.tasks.keypoints.geometry import (
    KeypointAugment, box_to_center_scale, crop_matrix, flip_keypoints, invert_matrix, transform_points, warp_image)


def _dot_image(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """One 1-pixel dot per point, channel k marks point k (up to 3)."""
    image = np.zeros((height, width, 3), np.uint8)
    for k, (x, y) in enumerate(points):
        image[int(y), int(x), k] = 255
    return image


def _centroid(channel: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[:channel.shape[0], :channel.shape[1]]
    mass = channel.astype(np.float64)
    return np.array([(mass * xs).sum() / mass.sum(), (mass * ys).sum() / mass.sum()])


def test_box_to_center_scale_grows_the_short_side_to_the_aspect_then_pads():
    center, scale = box_to_center_scale([10, 20, 30, 80], aspect=0.75, padding=1.25)
    np.testing.assert_allclose(center, [25, 60])
    np.testing.assert_allclose(scale, [60 * 1.25, 80 * 1.25])
    _, wide = box_to_center_scale([0, 0, 90, 30], aspect=0.75, padding=1.0)
    np.testing.assert_allclose(wide, [90, 120])


@pytest.mark.parametrize("rotation", [0.0, 30.0, -75.0])
def test_warped_pixels_sit_where_transform_points_puts_them(rotation):
    points = np.array([[30, 20], [50, 41], [18, 47]], np.float64)
    image = _dot_image(points, 80, 60)
    matrix = crop_matrix(np.array([35.0, 32.0]), np.array([60.0, 60.0]), rotation, (96, 96))
    crop = warp_image(image, matrix, (96, 96))
    assert crop.shape == (96, 96, 3) and crop.dtype == np.uint8
    expected = transform_points(points, matrix)
    for k in range(3):
        np.testing.assert_allclose(_centroid(crop[..., k]), expected[k], atol=0.1)


def test_the_crop_centre_maps_to_the_middle_and_the_inverse_undoes_the_matrix():
    matrix = crop_matrix([40.0, 30.0], [64.0, 48.0], 20.0, (32, 24))
    np.testing.assert_allclose(transform_points([[40.0, 30.0]], matrix), [[15.5, 11.5]])
    points = np.random.default_rng(0).uniform(0, 80, (10, 2))
    np.testing.assert_allclose(transform_points(transform_points(points, matrix), invert_matrix(matrix)), points)


def test_positive_rotation_turns_the_content_counter_clockwise_on_screen():
    matrix = crop_matrix([50.0, 50.0], [40.0, 40.0], 90.0, (40, 40))
    right_of_centre = transform_points([[60.0, 50.0]], matrix)[0]
    np.testing.assert_allclose(right_of_centre, [19.5, 9.5], atol=1e-9)  # moved up, above the middle


def test_a_flipped_image_gives_flipped_and_swapped_keypoints():
    names = ["head", "left_hand", "right_hand"]
    kps = np.array([[20, 5, 2], [7, 30, 2], [33, 28, 1]], np.float32)
    image = _dot_image(kps[:, :2], 48, 40)
    flipped_image = np.ascontiguousarray(image[:, ::-1])
    flipped = flip_keypoints(kps, 48, flip_pairs(names))
    # After the swap, keypoint k of the flipped image is where the flipped image shows the dot of its mirror.
    mirror = [0, 2, 1]
    for k in range(3):
        np.testing.assert_allclose(_centroid(flipped_image[..., mirror[k]]), flipped[k, :2])
    np.testing.assert_array_equal(flipped[:, 2], [2, 1, 2])  # visibility travels with its keypoint
    np.testing.assert_allclose(flip_keypoints(flipped, 48, flip_pairs(names)), kps)


def test_unlabelled_keypoints_keep_zero_coordinates_under_a_flip():
    kps = np.array([[0, 0, 0], [10, 3, 2]], np.float32)
    np.testing.assert_array_equal(flip_keypoints(kps, 20, []), [[0, 0, 0], [9, 3, 2]])


def test_augment_is_reproducible_and_stays_within_its_ranges():
    aug = KeypointAugment(scale_range=(0.8, 1.2), rotation_deg=20, flip_prob=0.5, pairs=[(1, 2)])
    image = np.zeros((100, 120, 3), np.uint8)
    kps = np.array([[50, 20, 2], [40, 50, 2], [60, 50, 2]], np.float32)
    first = [aug(np.random.default_rng(s), image, [30, 10, 40, 60], kps) for s in range(40)]
    again = [aug(np.random.default_rng(s), image, [30, 10, 40, 60], kps) for s in range(40)]
    for (c1, s1, r1, f1), (c2, s2, r2, f2) in zip(first, again):
        np.testing.assert_array_equal(c1, c2)
        assert (r1, f1) == (r2, f2) and np.array_equal(s1, s2)
    _, base = box_to_center_scale([30, 10, 40, 60], 0.75, 1.25)
    flips = [f for *_, f in first]
    assert any(flips) and not all(flips)
    for center, scale, rotation, flipped in first:
        assert abs(rotation) <= 20 and 0.8 - 1e-9 <= scale[0] / base[0] <= 1.2 + 1e-9
        np.testing.assert_allclose(center, [119 - 50 if flipped else 50, 40])


def test_half_body_crops_around_one_half_of_the_labelled_points():
    aug = KeypointAugment(scale_range=(1.0, 1.0), rotation_deg=0, flip_prob=0, half_body_prob=1.0,
                          upper_body_ids=[0, 1], half_body_min_points=3)
    kps = np.array([[50, 10, 2], [50, 30, 2], [50, 70, 2], [50, 90, 2]], np.float32)
    centers = {float(aug(np.random.default_rng(s), np.zeros((100, 100)), [40, 0, 20, 100], kps)[0][1])
               for s in range(20)}
    assert centers == {20.0, 80.0}
