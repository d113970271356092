"""The `faces` demo: real face photos with five MTCNN landmarks, read back whole, in a face's layout."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from transferkit.data.demo import build_demo
from transferkit.errors import DataError
from transferkit.tasks.keypoints.formats import flip_pairs, read_coco_keypoints

pytestmark = pytest.mark.skipif(importlib.util.find_spec("facenet_pytorch") is None,
                                reason="the facenet-pytorch wheel (MTCNN weights) is not installed")


def test_faces_read_back_with_landmarks_where_faces_have_them(tmp_path):
    summary = build_demo("faces", tmp_path / "faces", train=30, val=10, size=64)
    assert summary["counts"] == {"val": {"images": 10, "objects": 10}, "train": {"images": 30, "objects": 30}}
    train = read_coco_keypoints(tmp_path / "faces" / "train.json", tmp_path / "faces" / "train")
    val = read_coco_keypoints(tmp_path / "faces" / "val.json", tmp_path / "faces" / "val")
    assert train.skipped == [] and val.skipped == []
    assert flip_pairs(train.names) == [(0, 1), (3, 4)]
    kps = np.stack([o.keypoints for o in train.objects + val.objects])  # (40, 5, 3)
    assert (kps[..., 2] == 2).all()
    right_eye, left_eye, nose, right_mouth, left_mouth = (kps[:, k, :2] for k in range(5))
    # Facing the camera: the person's right side on the image's left; eyes above the nose above the mouth.
    assert (right_eye[:, 0] < left_eye[:, 0]).all() and (right_mouth[:, 0] < left_mouth[:, 0]).all()
    assert (np.maximum(right_eye[:, 1], left_eye[:, 1]) < nose[:, 1]).mean() > 0.9
    assert (nose[:, 1] < np.minimum(right_mouth[:, 1], left_mouth[:, 1])).mean() > 0.9
    eyes = np.linalg.norm(left_eye - right_eye, axis=1)
    assert (eyes > 0.2 * 64).all() and (eyes < 0.7 * 64).all()
    # The split is disjoint: no photo is in both (each image records which scikit-image photo it is).
    import json

    used = {split: {i["lfw_subset_index"] for i in json.loads((tmp_path / "faces" / f"{split}.json").read_text())["images"]}
            for split in ("train", "val")}
    assert len(used["train"]) == 30 and len(used["val"]) == 10 and not used["train"] & used["val"]


def test_faces_refuses_more_photos_than_scikit_image_ships(tmp_path):
    with pytest.raises(DataError, match="more than the 100 faces"):
        build_demo("faces", tmp_path / "f", train=90, val=20)
