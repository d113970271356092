"""OKS AP/AR equal pycocotools' COCOeval(iouType="keypoints") to 1e-6; PCK, NME and per-keypoint errors."""
from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest

from transferkit.metrics.keypoints import OKS_KEYS, keypoint_errors, nme, oks_evaluate, pck

K = 5
SIGMAS = np.array([0.025, 0.079, 0.079, 0.107, 0.089])


def _pycocotools(gt: dict, results: list[dict], sigmas: np.ndarray) -> dict:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {key: (None if v == -1 else float(v)) for key, v in zip(OKS_KEYS, ev.stats)}


def _assert_equal(gt: dict, results: list[dict], sigmas: np.ndarray = SIGMAS) -> dict:
    pytest.importorskip("pycocotools")
    ours = oks_evaluate(gt, results, sigmas)
    theirs = _pycocotools(gt, results, sigmas)
    for key in OKS_KEYS:
        if theirs[key] is None:
            assert ours[key] is None, key
        else:
            assert ours[key] == pytest.approx(theirs[key], abs=1e-6), key
    return ours


def _object(rng: np.random.Generator, ann_id: int, image_id: int, category_id: int = 1, crowd: bool = False) -> dict:
    side = float(rng.choice([20, 45, 70, 120, 200])) * rng.uniform(0.8, 1.2)  # small, medium and large areas
    x, y = rng.uniform(0, 300, 2)
    w, h = side, side * rng.uniform(0.7, 1.5)
    kps = np.c_[x + rng.uniform(0, w, K), y + rng.uniform(0, h, K), rng.choice([0, 1, 2], K, p=[0.2, 0.2, 0.6])]
    if rng.random() < 0.1:
        kps[:, 2] = 0  # no labelled keypoint: ignored, yet absorbs predictions near its box
    kps[kps[:, 2] == 0, :2] = 0
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": [x, y, w, h],
            "area": w * h * rng.uniform(0.4, 0.9), "iscrowd": int(crowd),
            "num_keypoints": int((kps[:, 2] > 0).sum()), "keypoints": kps.reshape(-1).round(2).tolist()}


def _random_case(seed: int, num_images: int = 12, categories: tuple[int, ...] = (1,)) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    images = [{"id": int(i), "file_name": f"{i}.png", "width": 640, "height": 480}
              for i in rng.permutation(np.arange(1, num_images + 1) * 3)]  # ids out of order
    anns, results, ann_id = [], [], 1
    for img in images:
        for cat in categories:
            objects = [_object(rng, ann_id + j, img["id"], cat, crowd=rng.random() < 0.08)
                       for j in range(int(rng.integers(0, 5)))]  # some images have no objects
            ann_id += len(objects)
            anns.extend(objects)
            for obj in objects:
                if rng.random() < 0.2:
                    continue  # an object nobody predicted
                truth = np.asarray(obj["keypoints"], np.float64).reshape(K, 3)
                x, y, w, h = obj["bbox"]
                for _ in range(int(rng.integers(1, 4))):
                    guess = np.where(truth[:, 2:] > 0, truth[:, :2], [x + w / 2, y + h / 2])
                    guess = guess + rng.normal(0, rng.choice([1, 4, 15]), (K, 2))
                    results.append({"image_id": img["id"], "category_id": cat,
                                    "keypoints": np.c_[guess, rng.random(K)].reshape(-1).round(2).tolist(),
                                    "score": float(np.round(rng.random(), 1))})  # rounded: many equal scores
            for _ in range(int(rng.integers(0, 3))):  # false positives anywhere
                spot = rng.uniform(0, 400, 2) + rng.normal(0, 30, (K, 2))
                results.append({"image_id": img["id"], "category_id": cat,
                                "keypoints": np.c_[spot, np.ones(K)].reshape(-1).tolist(),
                                "score": float(np.round(rng.random(), 2))})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": c, "name": f"c{c}", "keypoints": [f"k{i}" for i in range(K)]} for c in categories]}
    return gt, results


@pytest.mark.parametrize("seed", range(6))
def test_random_predictions_score_as_pycocotools(seed):
    gt, results = _random_case(seed)
    ours = _assert_equal(gt, results)
    assert ours["num_gt"] == len(gt["annotations"]) and ours["num_results"] == len(results)


def test_two_categories_average_as_pycocotools():
    _assert_equal(*_random_case(11, num_images=8, categories=(1, 4)))


def test_more_than_20_predictions_per_image_keep_the_20_best():
    gt, results = _random_case(21, num_images=3)
    rng = np.random.default_rng(0)
    image = gt["annotations"][0]["image_id"]
    truth = np.asarray(gt["annotations"][0]["keypoints"], np.float64).reshape(K, 3)
    for i in range(40):  # good predictions with low scores fall past the cut
        guess = truth[:, :2] + rng.normal(0, 1.0 if i % 2 else 20.0, (K, 2))
        results.append({"image_id": image, "category_id": 1, "keypoints": np.c_[guess, np.ones(K)].reshape(-1).tolist(),
                        "score": 0.01 if i % 2 else 0.99})
    _assert_equal(gt, results)


def test_crowd_objects_absorb_many_predictions_and_unlabelled_keypoints_are_not_scored():
    gt, _ = _random_case(3, num_images=2)
    crowd = {"id": 900, "image_id": gt["images"][0]["id"], "category_id": 1, "bbox": [10, 10, 300, 300],
             "area": 50000.0, "iscrowd": 1, "num_keypoints": 3,
             "keypoints": [20, 20, 2, 40, 40, 2, 60, 60, 2, 0, 0, 0, 0, 0, 0]}
    gt["annotations"].append(crowd)
    results = [{"image_id": crowd["image_id"], "category_id": 1, "score": 0.5 + i / 100,
                "keypoints": [20 + i, 20, 1, 40, 40 + i, 1, 60, 60, 1, 999, 999, 1, -50, 7, 1]} for i in range(6)]
    _assert_equal(gt, results)


def test_missing_predictions_and_images_without_objects():
    gt, results = _random_case(5, num_images=10)
    no_gt = {a["image_id"] for a in gt["annotations"]}
    gt["images"].append({"id": 10_000, "file_name": "empty.png", "width": 10, "height": 10})
    results = results[::3] + [{"image_id": 10_000, "category_id": 1, "score": 0.9,
                               "keypoints": [1.0, 1.0, 1.0] * K}]
    assert 10_000 not in no_gt
    _assert_equal(gt, results)


def test_annotation_id_zero_keeps_pycocotools_behaviour():
    gt, results = _random_case(8, num_images=4)
    gt["annotations"][0]["id"] = 0
    _assert_equal(gt, results)


def test_no_predictions_at_all_give_zero_and_no_ground_truth_gives_none():
    gt, _ = _random_case(2, num_images=4)
    assert oks_evaluate(gt, [], SIGMAS)["AP"] == 0.0
    empty = {**gt, "annotations": []}
    _, results = _random_case(2, num_images=4)
    assert all(oks_evaluate(empty, results, SIGMAS)[key] is None for key in OKS_KEYS)


def test_perfect_predictions_score_one():
    gt, _ = _random_case(4, num_images=5)
    results = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
               for a in gt["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0]
    assert oks_evaluate(gt, results, SIGMAS)["AP"] == pytest.approx(1.0)
    _assert_equal(gt, results)


def test_results_for_unknown_images_or_of_the_wrong_length_are_refused():
    gt, _ = _random_case(1, num_images=2)
    with pytest.raises(ValueError, match="image_id 5555"):
        oks_evaluate(gt, [{"image_id": 5555, "category_id": 1, "keypoints": [0] * 3 * K, "score": 1}], SIGMAS)
    with pytest.raises(ValueError, match="6 keypoint numbers"):
        oks_evaluate(gt, [{"image_id": gt["images"][0]["id"], "category_id": 1, "keypoints": [0] * 6, "score": 1}],
                     SIGMAS)


def test_pck_nme_and_errors_count_labelled_keypoints_only():
    gt = np.array([[[10, 10, 2], [20, 20, 1], [0, 0, 0]],
                   [[50, 50, 2], [60, 60, 2], [70, 70, 2]]], np.float64)
    pred = np.array([[[13, 14, 0], [20, 20, 0], [99, 99, 0]],
                     [[50, 50, 0], [60, 70, 0], [70, 71, 0]]], np.float64)[..., :2]
    norm = np.array([100.0, 100.0])
    overall, per = pck(pred, gt, norm, alpha=0.05)  # within 5 px: distances 5, 0 | 0, 10, 1
    assert overall == pytest.approx(4 / 5)
    np.testing.assert_allclose(per, [1.0, 0.5, 1.0])
    overall, per = nme(pred, gt, norm)
    assert overall == pytest.approx((5 + 0 + 0 + 10 + 1) / 5 / 100)
    np.testing.assert_allclose(per, [0.025, 0.05, 0.01])
    np.testing.assert_allclose(keypoint_errors(pred, gt), [2.5, 5.0, 1.0])
    overall, per = pck(pred[:1], np.zeros((1, 3, 3)), norm[:1])
    assert np.isnan(overall) and np.isnan(per).all()  # nothing labelled: undefined, not 0 or 1


def test_identical_objects_and_equal_oks_break_ties_as_pycocotools():
    gt, _ = _random_case(6, num_images=2)
    twin = dict(gt["annotations"][0], id=777)
    small = dict(gt["annotations"][0], id=778, area=10.0)  # the same points, outside the medium/large ranges
    gt["annotations"] += [twin, small]
    results = [{"image_id": twin["image_id"], "category_id": 1, "keypoints": twin["keypoints"], "score": 0.5}] * 3
    _assert_equal(gt, results, sigmas=np.full(K, 0.05))
