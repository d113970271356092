"""COCO keypoint labels: good files read back exactly; every bad row is skipped and named with file and id."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferkit.errors import DataError, SpecError
from transferkit.tasks.keypoints.formats import (
    coco_sigmas, flip_pairs, read_coco_keypoints, write_coco_results)

NAMES = ["head", "left_hand", "right_hand"]


def _ann(ann_id: int, image_id: int = 1, **over) -> dict:
    ann = {"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": [10, 10, 40, 50], "area": 1500.0,
           "iscrowd": 0, "num_keypoints": 3, "keypoints": [30, 12, 2, 12, 40, 1, 48, 40, 2]}
    ann.update(over)
    return ann


def _coco(annotations: list[dict] | None = None, **over) -> dict:
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 80},
                   {"id": 2, "file_name": "b.png", "width": 64, "height": 80}],
        "annotations": annotations if annotations is not None else [_ann(1), _ann(2, image_id=2)],
        "categories": [{"id": 1, "name": "figure", "keypoints": list(NAMES), "skeleton": [[1, 2], [1, 3]]}],
    }
    data.update(over)
    return data


def _write(tmp_path: Path, data, name: str = "train.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_a_good_file_reads_back_names_skeleton_images_and_objects(tmp_path):
    ks = read_coco_keypoints(_write(tmp_path, _coco([_ann(1), _ann(7, image_id=2, keypoints=[5, 5, 0] * 3,
                                                                   iscrowd=1)])))
    assert ks.names == NAMES and ks.skeleton == [(0, 1), (0, 2)]
    assert (ks.category_id, ks.category_name) == (1, "figure")
    assert [(i.id, i.file, i.width, i.height) for i in ks.images] == [(1, "a.png", 64, 80), (2, "b.png", 64, 80)]
    assert ks.skipped == []
    first, crowd = ks.objects
    assert first.ann_id == 1 and first.image_id == 1 and first.bbox == (10.0, 10.0, 40.0, 50.0)
    assert first.keypoints.dtype == np.float32 and first.keypoints.shape == (3, 3)
    np.testing.assert_array_equal(first.keypoints[1], [12, 40, 1])
    assert first.area == 1500.0 and not first.iscrowd and first.num_keypoints == 3
    assert crowd.iscrowd and crowd.num_keypoints == 0
    np.testing.assert_array_equal(crowd.keypoints[:, :2], 0)  # unlabelled points carry no coordinates


def test_to_coco_round_trips_through_the_reader(tmp_path):
    ks = read_coco_keypoints(_write(tmp_path, _coco()))
    again = read_coco_keypoints(_write(tmp_path, ks.to_coco(), "again.json"))
    assert again.names == ks.names and again.skeleton == ks.skeleton and again.skipped == []
    for a, b in zip(ks.objects, again.objects):
        np.testing.assert_allclose(a.keypoints, b.keypoints)
        assert (a.ann_id, a.bbox, a.area) == (b.ann_id, b.bbox, b.area)


BAD_ROWS = {
    "wrong length": ({"keypoints": [1, 2, 2, 3, 4, 2]}, "has 6 numbers, expected 3 x 3 = 9"),
    "NaN": ({"keypoints": [30, float("nan"), 2, 12, 40, 1, 48, 40, 2]}, "not a finite number"),
    "string": ({"keypoints": [30, "12", 2, 12, 40, 1, 48, 40, 2]}, "not a finite number"),
    "outside the image": ({"keypoints": [30, 12, 2, 99, 40, 1, 48, 40, 2]}, "lies outside its 64x80 image"),
    "negative outside": ({"keypoints": [30, -3, 2, 12, 40, 1, 48, 40, 2]}, "lies outside"),
    "missing bbox": ({"bbox": None}, "bbox is None"),
    "short bbox": ({"bbox": [1, 2, 3]}, "give 4 numbers"),
    "zero-width bbox": ({"bbox": [10, 10, 0, 20]}, "has no area"),
    "bad visibility": ({"keypoints": [30, 12, 3, 12, 40, 1, 48, 40, 2]}, "visibility 3"),
    "unknown image id": ({"image_id": 42}, "image_id 42 is not in images"),
    "unknown category": ({"category_id": 9}, "category_id 9 is not in categories"),
    "bad iscrowd": ({"iscrowd": 2}, "iscrowd is 2"),
    "negative area": ({"area": -1}, "area is -1"),
    "keypoints not a list": ({"keypoints": "1 2 2"}, "not a list"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_each_bad_row_is_skipped_and_named_with_file_and_annotation_id(tmp_path, case):
    change, reason = BAD_ROWS[case]
    ks = read_coco_keypoints(_write(tmp_path, _coco([_ann(1), _ann(17, **change)])))
    assert [o.ann_id for o in ks.objects] == [1]
    assert len(ks.skipped) == 1
    assert ks.skipped[0].startswith("train.json: annotation 17: ")
    assert reason in ks.skipped[0]


def test_duplicate_annotation_and_image_ids_keep_the_first_and_say_so(tmp_path):
    data = _coco([_ann(5), _ann(5, image_id=2)])
    data["images"].append({"id": 2, "file_name": "c.png", "width": 10, "height": 10})
    ks = read_coco_keypoints(_write(tmp_path, data))
    assert [o.image_id for o in ks.objects] == [1]
    assert [i.file for i in ks.images] == ["a.png", "b.png"]
    assert any(s.startswith("train.json: images[2] (id 2): the image id is used twice") for s in ks.skipped)
    assert any(s.startswith("train.json: annotation 5: the id is used twice") for s in ks.skipped)
    assert len(ks.skipped) == 2


def test_missing_image_files_are_reported_and_sizes_come_from_the_files(tmp_path):
    Image.new("RGB", (70, 90)).save(tmp_path / "a.png")  # the header wins over the JSON's 64x80
    ks = read_coco_keypoints(_write(tmp_path, _coco()), tmp_path)
    assert [(i.id, i.width, i.height) for i in ks.images] == [(1, 70, 90)]
    assert [o.ann_id for o in ks.objects] == [1]
    assert len(ks.skipped) == 2
    assert "b.png is not on disk" in ks.skipped[0] and ks.skipped[0].startswith("train.json: images[1] (id 2)")
    assert ks.skipped[1].startswith("train.json: annotation 2: its image was skipped")


def test_an_image_without_a_size_is_skipped_when_no_folder_is_given(tmp_path):
    data = _coco()
    del data["images"][1]["width"]
    ks = read_coco_keypoints(_write(tmp_path, data))
    assert [i.id for i in ks.images] == [1]
    assert "width/height" in ks.skipped[0]


def test_keypoints_on_the_image_edge_are_inside_in_either_pixel_convention(tmp_path):
    kps = [-0.5, 0, 2, 64, 80, 2, 63, 79, 2]
    ks = read_coco_keypoints(_write(tmp_path, _coco([_ann(1, keypoints=kps)])))
    assert ks.skipped == [] and len(ks.objects) == 1


def test_other_categories_objects_are_not_part_of_the_set(tmp_path):
    data = _coco([_ann(1), _ann(2, category_id=5, keypoints=[])])
    data["categories"].append({"id": 5, "name": "car"})
    ks = read_coco_keypoints(_write(tmp_path, data))
    assert [o.ann_id for o in ks.objects] == [1] and ks.skipped == []


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    (json.dumps([{"image_id": 1}]), "is an object with lists"),
])
def test_a_file_that_is_not_coco_keypoints_is_a_data_error(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        read_coco_keypoints(_write(tmp_path, text))


def test_whole_file_mistakes_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_coco_keypoints(tmp_path / "nope.json")
    with pytest.raises(DataError, match="no category has a 'keypoints' list"):
        read_coco_keypoints(_write(tmp_path, _coco(categories=[{"id": 1, "name": "figure"}])))
    two = _coco()
    two["categories"].append({"id": 2, "name": "hand", "keypoints": ["a", "b"]})
    with pytest.raises(DataError, match="choose one with data.category"):
        read_coco_keypoints(_write(tmp_path, two))
    assert read_coco_keypoints(_write(tmp_path, two), category="HAND").names == ["a", "b"]
    with pytest.raises(DataError, match="no category named 'dog'"):
        read_coco_keypoints(_write(tmp_path, two), category="dog")


@pytest.mark.parametrize("names, message", [
    (["head", "left\nhand", "right_hand"], "control character"),
    (["head", "", "right_hand"], "non-empty string"),
    (["head", "Head", "right_hand"], "appears twice"),
    (["head", 3, "right_hand"], "non-empty string"),
])
def test_bad_keypoint_names_refuse_the_file(tmp_path, names, message):
    data = _coco()
    data["categories"][0]["keypoints"] = names
    with pytest.raises(DataError, match=message) as info:
        read_coco_keypoints(_write(tmp_path, data))
    assert "train.json" in str(info.value)


@pytest.mark.parametrize("skeleton", [[[0, 1]], [[1, 4]], [[1]], "1-2"])
def test_a_skeleton_edge_outside_1_to_k_refuses_the_file(tmp_path, skeleton):
    data = _coco()
    data["categories"][0]["skeleton"] = skeleton
    with pytest.raises(DataError, match="skeleton"):
        read_coco_keypoints(_write(tmp_path, data))


def test_flip_pairs_come_from_left_right_names_in_any_spelling():
    names = ["nose", "Left_Eye", "right_eye", "l_ear", "r_ear", "wrist_left", "wrist_right", "left-foot",
             "right-foot", "mouth_left_corner", "mouth_right_corner", "left_only"]
    assert flip_pairs(names) == [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10)]


def test_given_flip_pairs_win_and_bad_ones_are_spec_errors():
    names = ["a", "b", "c", "left_x", "right_x"]
    assert flip_pairs(names, [["c", "A"]]) == [(0, 2)]
    with pytest.raises(SpecError, match="'z', which is not a keypoint"):
        flip_pairs(names, [["a", "z"]])
    with pytest.raises(SpecError, match="in two pairs"):
        flip_pairs(names, [["a", "b"], ["b", "c"]])
    with pytest.raises(SpecError, match="with itself"):
        flip_pairs(names, [["a", "a"]])


def test_coco_sigmas_only_for_the_17_coco_person_joints():
    coco = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
            "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
            "right_knee", "left_ankle", "right_ankle"]
    sigmas = coco_sigmas(coco)
    assert sigmas.shape == (17,) and sigmas[0] == pytest.approx(0.026) and sigmas[11] == pytest.approx(0.107)
    assert coco_sigmas(list(reversed(coco)))[-1] == pytest.approx(0.026)  # follows the given order
    assert coco_sigmas(coco[:16]) is None and coco_sigmas(NAMES) is None


def test_results_are_written_as_a_coco_results_list(tmp_path):
    path = write_coco_results(tmp_path / "keypoints.json", [
        {"image_id": np.int64(3), "category_id": 1, "keypoints": np.array([1.5, 2, 0.9]), "score": np.float32(0.5)}])
    assert json.loads(path.read_text()) == [{"image_id": 3, "category_id": 1, "keypoints": [1.5, 2.0, 0.9],
                                             "score": 0.5}]
    with pytest.raises(ValueError, match="lacks score"):
        write_coco_results(tmp_path / "x.json", [{"image_id": 1, "category_id": 1, "keypoints": []}])


def test_unlabelled_keypoints_may_hold_any_coordinates_and_read_as_zero(tmp_path):
    ks = read_coco_keypoints(_write(tmp_path, _coco([_ann(1, keypoints=[999, -40, 0, 12, 40, 1, 48, 40, 2])])))
    assert ks.skipped == []
    np.testing.assert_array_equal(ks.objects[0].keypoints[0], [0, 0, 0])


def test_image_entries_without_an_integer_id_or_file_name_are_skipped_and_named(tmp_path):
    data = _coco([_ann(1)])
    data["images"] += [{"id": "x7", "file_name": "c.png", "width": 5, "height": 5},
                       {"id": 9, "file_name": "", "width": 5, "height": 5}]
    ks = read_coco_keypoints(_write(tmp_path, data))
    assert [i.id for i in ks.images] == [1, 2]
    assert ks.skipped[0].startswith("train.json: images[2] (id x7): needs an integer 'id'")
    assert ks.skipped[1].startswith("train.json: images[3] (id 9): file_name is ''")


def test_upper_body_keypoints_are_found_by_name():
    from transferkit.tasks.keypoints.formats import upper_body_ids

    names = ["nose", "left_eye", "Right-Shoulder", "left_elbow", "r_wrist", "left_hip", "right_knee", "ankle_l",
             "neck", "left_hand", "tail"]
    assert upper_body_ids(names) == [0, 1, 2, 3, 4, 8, 9]
