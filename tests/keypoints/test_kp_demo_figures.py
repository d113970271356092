"""The `figures` demo: deterministic COCO keypoint files that the reader accepts whole, with occluded and
out-of-frame keypoints, boxes around the drawn figures and left/right limbs that can be told apart."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from transferkit.data.demo import DEMO_DATASETS, build_demo
from transferkit.data.keypoint_demo import FIGURE_KEYPOINTS, figure_scene
from transferkit.errors import DataError
from transferkit.tasks.keypoints.formats import flip_pairs, read_coco_keypoints


def _hashes(folder) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_figures_reads_back_with_nothing_skipped(tmp_path):
    summary = build_demo("figures", tmp_path / "f", train=12, val=4, size=96)
    assert DEMO_DATASETS["figures"].task == "keypoints"
    for split, count in (("train", 12), ("val", 4)):
        ks = read_coco_keypoints(tmp_path / "f" / f"{split}.json", tmp_path / "f" / split)
        assert ks.skipped == []
        assert ks.names == list(FIGURE_KEYPOINTS) and len(ks.skeleton) == 14
        assert len(ks.images) == count and all((i.width, i.height) == (96, 96) for i in ks.images)
        assert len(ks.objects) == summary["counts"][split]["objects"] >= count
        for obj in ks.objects:
            assert obj.num_keypoints >= 1 and 0 < obj.area <= obj.bbox[2] * obj.bbox[3]
            x, y, w, h = obj.bbox
            labelled = obj.keypoints[obj.keypoints[:, 2] > 0]
            # Every labelled joint lies on the figure, so inside its box (half a limb width of slack).
            assert (labelled[:, 0] >= x - 1).all() and (labelled[:, 0] <= x + w + 1).all()
            assert (labelled[:, 1] >= y - 1).all() and (labelled[:, 1] <= y + h + 1).all()
    assert len(flip_pairs(ks.names)) == 6


def test_figures_have_visible_occluded_and_out_of_frame_keypoints():
    v = np.concatenate([np.asarray(a["keypoints"][2::3]) for i in range(40)
                        for a in figure_scene(0, "train", i, 128).annotations])
    counts = np.bincount(v.astype(int), minlength=3)
    assert counts[2] > counts[1] > 0 and counts[0] > 0


def test_left_limbs_are_lighter_than_right_limbs():
    brighter = 0
    for i in range(10):
        scene = figure_scene(1, "val", i, 128)
        for ann in scene.annotations[-1:]:  # the last figure drawn is never covered by another
            kps = np.asarray(ann["keypoints"]).reshape(-1, 3)
            grey = scene.image.astype(float).mean(axis=2)
            left_wrist, right_wrist = kps[6], kps[7]
            if left_wrist[2] == 2 and right_wrist[2] == 2:
                brighter += grey[int(round(left_wrist[1])), int(round(left_wrist[0]))] > \
                            grey[int(round(right_wrist[1])), int(round(right_wrist[0]))]
    assert brighter >= 5


def test_same_seed_same_bytes_and_options_are_checked(tmp_path):
    build_demo("figures", tmp_path / "a", seed=2, train=3, val=2, size=64)
    build_demo("figures", tmp_path / "b", seed=2, train=3, val=2, size=64)
    build_demo("figures", tmp_path / "c", seed=3, train=3, val=2, size=64)
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b") != _hashes(tmp_path / "c")
    data = json.loads((tmp_path / "a" / "train.json").read_text())
    assert data["categories"][0]["skeleton"][0] == [1, 2]  # 1-based, as COCO writes it
    with Image.open(tmp_path / "a" / "train" / "000000.png") as im:
        assert im.size == (64, 64) and im.mode == "RGB"
    with pytest.raises(DataError, match="size=32 is too small"):
        build_demo("figures", tmp_path / "d", size=32)
