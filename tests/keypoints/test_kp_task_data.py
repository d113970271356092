"""The keypoint DataModule: crops whose target heatmaps decode back onto the labelled points, flips that mirror and
swap left/right, sigma resolution, and bad rows / bad images counted and named, never fatal."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.errors import DataError, SpecError
from transferkit.spec import load_spec
from transferkit.tasks.keypoints.codec import decode_heatmaps
from transferkit.tasks.keypoints.data import KeypointData, resolve_sigmas
from transferkit.tasks.keypoints.formats import coco_sigmas
from transferkit.tasks.keypoints.module import to_image
from transferkit.tasks.keypoints.spec import KeypointsSpec

from kp_task_helpers import NAMES, data_args, make_set, tkit

SMALL = ["data.image_width=64", "data.image_height=64", "train.num_workers=0", "data.heatmap_sigma=1.5"]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build(root: Path, *extra: str) -> KeypointData:
    return KeypointData(load_spec(KeypointsSpec, None, [*data_args(root), *SMALL, *extra]), MEAN, STD)


def decoded_in_image(sample) -> np.ndarray:
    image, heatmaps, weights, inverse, _ = sample
    xy, _ = decode_heatmaps(heatmaps[None], (image.shape[2], image.shape[1]))
    return to_image(xy, inverse[None])[0].numpy()


def test_items_are_objects_and_targets_decode_onto_the_labelled_points(kpset):
    data = build(kpset)
    assert len(data.train_items) == 12 and len(data.val_items) == 6  # 1 or 2 figures per image
    assert data.pairs == [(1, 2), (3, 4)] and data.names == NAMES
    crops = data.crops(data.val_items, train=False, targets=True)
    for i, item in enumerate(data.val_items):
        sample = crops[i]
        assert sample[0].shape == (3, 64, 64) and sample[1].shape == (5, 16, 16)
        assert torch.equal(sample[2], torch.ones(5))
        # One heatmap pixel is about 3 image pixels here; points near the crop's edge decode least exactly.
        np.testing.assert_allclose(decoded_in_image(sample), item.keypoints[:, :2], atol=1.5)


def test_a_flipped_crop_holds_the_mirrored_points_with_left_and_right_swapped(kpset):
    data = build(kpset, "data.augmentation.horizontal_flip=1.0", "data.augmentation.rotation=0",
                 "data.augmentation.scale=[1,1]", "data.augmentation.color_jitter=0")
    plain = data.crops(data.train_items, train=False, targets=True)[0]
    flipped = data.crops(data.train_items, train=True, targets=True)[0]
    width = plain[0].shape[2]
    # The flipped crop is the mirror image of the plain one (same box, mirrored about its centre) ...
    torch.testing.assert_close(flipped[0], plain[0].flip(-1), atol=0.05, rtol=0)
    # ... and its left_hand heatmap is the plain crop's right_hand one, mirrored.
    for a, b in [(1, 2), (2, 1), (3, 4), (0, 0)]:
        torch.testing.assert_close(flipped[1][a], plain[1][b].flip(-1), atol=0.02, rtol=0)
    assert width == 64


def test_sigmas_from_the_spec_coco_or_uniform():
    coco_names = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                  "right_knee", "left_ankle", "right_ankle"]
    np.testing.assert_allclose(resolve_sigmas(None, coco_names), coco_sigmas(coco_names))
    np.testing.assert_allclose(resolve_sigmas(None, NAMES), [0.05] * 5)
    np.testing.assert_allclose(resolve_sigmas(0.08, NAMES), [0.08] * 5)
    np.testing.assert_allclose(resolve_sigmas([0.1, 0.2, 0.2, 0.3, 0.3], NAMES), [0.1, 0.2, 0.2, 0.3, 0.3])
    with pytest.raises(SpecError, match="data.keypoint_sigmas has 2 values"):
        resolve_sigmas([0.1, 0.2], NAMES)


def test_bad_rows_and_unreadable_images_are_counted_and_named(kpset, tmp_path):
    root = tmp_path / "bad"
    make_set(root, train=4, val=2)
    coco = json.loads((root / "train.json").read_text())
    coco["annotations"][0]["keypoints"] = coco["annotations"][0]["keypoints"][:-3]  # wrong length
    crowd = dict(coco["annotations"][2], id=99, iscrowd=1)
    coco["annotations"].append(crowd)
    (root / "train.json").write_text(json.dumps(coco))
    whole = (root / "train" / "0004.png").read_bytes()
    (root / "train" / "0004.png").write_bytes(whole[: len(whole) // 2])  # a readable header, truncated pixels
    data = build(root)
    problems = data.problems["train"]
    assert problems["count"] == 1 and "annotation 1" in problems["rows"][0]
    assert problems["objects_without_keypoints_or_crowd"] == 1
    data.scan("train")
    assert [Path(k).name for k in data.skipped] == ["0004.png"] and "truncated" in next(iter(data.skipped.values()))
    assert len(data.train_items) == 4 and all(not str(it.image).endswith("0004.png") for it in data.train_items)


def test_keypoint_names_must_match_between_splits(kpset, tmp_path):
    root = tmp_path / "mismatch"
    make_set(root, train=2, val=2)
    coco = json.loads((root / "val.json").read_text())
    coco["categories"][0]["keypoints"] = ["a", "b", "c", "d", "e"]
    (root / "val.json").write_text(json.dumps(coco))
    with pytest.raises(DataError, match="data.val_labels: keypoints"):
        build(root)


@pytest.mark.parametrize("override, key", [
    ("data.image_width=50", "data.image_width"),
    ("data.keypoint_sigmas=[0.1,0.2]", "data.keypoint_sigmas"),
    ("model.deconv_chanels=[8]", "model.deconv_channels"),  # a typo: the message suggests the real key
    ("export.output=boxes", "export.output"),
    ("data.flip_pairs=[[left_hand,elbow]]", "elbow"),
])
def test_bad_spec_values_exit_2_naming_the_key(kpset, tmp_path, capsys, override, key):
    assert tkit("keypoints", "train", "-r", tmp_path / "r", *data_args(kpset), *SMALL, "model.pretrained=false",
                "train.epochs=1", override) == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err


def test_default_spec_lists_the_contract_keys(capsys):
    assert tkit("keypoints", "default_spec") == 0
    out = capsys.readouterr().out
    for key in ("train_labels:", "keypoint_sigmas:", "backbone:", "detector:", "predictions:", "flip_test:",
                "output: heatmaps"):
        assert key in out
