"""COCO segmentation input (polygons, RLE, iscrowd, paint order, categories by name or id, every bad
entry counted) and dataset_convert both ways, with exact round trips."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from transferkit.vision.masks import (ClassTable, MaskProblems, coco_class_table, coco_decode, load_target, pair_masks,
                                      read_coco_masks, read_mask, scan_targets)
from transferkit.vision.seg_convert import coco_to_masks, masks_to_coco, outline_polygons

W, H = 12, 10


def rle_of(binary: np.ndarray, compressed: bool = True) -> dict:
    if compressed:
        rle = coco_mask.encode(np.asfortranarray(binary.astype(np.uint8)))
        return {"size": list(rle["size"]), "counts": rle["counts"].decode()}
    flat = binary.astype(np.uint8).reshape(-1, order="F")  # column-major runs, starting with zeros
    runs, value, count = [], 0, 0
    for v in flat:
        if v == value:
            count += 1
        else:
            runs.append(count)
            value, count = v, 1
    runs.append(count)
    return {"size": [binary.shape[0], binary.shape[1]], "counts": runs}


def box(x0, y0, x1, y1) -> np.ndarray:
    region = np.zeros((H, W), bool)
    region[y0:y1, x0:x1] = True
    return region


def write_coco(root: Path, annotations: list[dict], images: dict[str, tuple[int, int]] | None = None,
               categories: list[dict] | None = None, listed: dict[str, tuple[int, int]] | None = None) -> tuple[Path, Path]:
    """images/<name> on disk (default a.png, b.png of W x H) and ann.json listing `listed` (default the same)."""
    images = {"a.png": (W, H), "b.png": (W, H)} if images is None else images
    listed = images if listed is None else listed
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name, size in images.items():
        Image.new("RGB", size, (20, 40, 60)).save(root / "images" / name)
    document = {
        "images": [{"id": i + 1, "file_name": name, "width": size[0], "height": size[1]}
                   for i, (name, size) in enumerate(listed.items())],
        "annotations": [{"id": k + 1, "iscrowd": 0, **a} for k, a in enumerate(annotations)],
        "categories": categories or [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}],
    }
    (root / "ann.json").write_text(json.dumps(document))
    return root / "images", root / "ann.json"


def targets(images, json_path, table) -> tuple[dict[str, np.ndarray], MaskProblems]:
    problems = MaskProblems()
    items = read_coco_masks(images, json_path, table, problems)
    return {it.image.name: load_target(it, table) for it in items}, problems


def test_polygons_and_rle_rasterise_in_order_with_crowd_ignored(tmp_path):
    polygon = [2.0, 1.0, 6.0, 1.0, 6.0, 5.0, 2.0, 5.0]  # pixel corners: columns 2..5, rows 1..4
    annotations = [
        {"image_id": 1, "category_id": 1, "segmentation": [polygon]},
        {"image_id": 1, "category_id": 2, "segmentation": rle_of(box(4, 3, 9, 8))},  # later: covers the car
        {"image_id": 1, "category_id": 1, "segmentation": rle_of(box(10, 0, 12, 2), compressed=False), "iscrowd": 1},
        {"image_id": 2, "category_id": 2, "segmentation": rle_of(box(0, 0, 3, 3), compressed=False)},
    ]
    images, json_path = write_coco(tmp_path, annotations)
    table = coco_class_table(json.loads(json_path.read_text()))
    assert table.names == ["background", "car", "person"]
    found, problems = targets(images, json_path, table)
    expected = np.zeros((H, W), np.int64)
    expected[box(2, 1, 6, 5)] = 1
    expected[box(4, 3, 9, 8)] = 2
    expected[box(10, 0, 12, 2)] = 255
    np.testing.assert_array_equal(found["a.png"], expected)
    second = np.zeros((H, W), np.int64)
    second[box(0, 0, 3, 3)] = 2
    np.testing.assert_array_equal(found["b.png"], second)
    assert problems.counts == {}


def test_categories_map_by_name_ignoring_case_or_by_explicit_ids_and_unknown_ones_are_counted(tmp_path):
    categories = [{"id": 1, "name": "Car"}, {"id": 2, "name": "truck"}, {"id": 3, "name": "tree"},
                  {"id": 7, "name": "bus"}]
    annotations = [{"image_id": 1, "category_id": c, "segmentation": rle_of(box(2 * c - 2, 0, 2 * c, 2))}
                   for c in (1, 2, 3)]
    annotations.append({"image_id": 1, "category_id": 7, "segmentation": rle_of(box(0, 5, 2, 7))})
    images, json_path = write_coco(tmp_path, annotations, categories=categories)
    table = ClassTable.build(["background", "car", {"name": "vehicle", "ids": [2, 7]}])
    found, problems = targets(images, json_path, table)
    row = found["a.png"][0]
    assert list(row[:6]) == [1, 1, 2, 2, 255, 255]  # tree: in no class -> ignore
    assert found["a.png"][5, 0] == 2  # bus (id 7) -> vehicle
    assert problems.unmapped_classes == {"tree": 1}


def test_without_a_background_class_uncovered_pixels_are_ignored_and_that_is_said(tmp_path):
    images, json_path = write_coco(tmp_path, [{"image_id": 1, "category_id": 1, "segmentation": rle_of(box(0, 0, 2, 2))}])
    found, problems = targets(images, json_path, ClassTable.build(["car", "person"]))
    assert found["a.png"][0, 0] == 0 and found["a.png"][5, 5] == 255
    assert problems.counts == {"uncovered_pixels_ignored": 1}


def test_every_bad_coco_entry_is_counted_with_its_place_in_the_file(tmp_path):
    annotations = [
        {"image_id": 1, "category_id": 1, "segmentation": [[1, 2, 3, 4]]},  # too few points
        {"image_id": 1, "category_id": 1, "segmentation": {"size": [5, 5], "counts": [25]}},  # wrong size
        {"image_id": 1, "category_id": 1, "segmentation": {"size": [H, W], "counts": [3, 4]}},  # wrong sum
        {"image_id": 1, "category_id": 1, "bbox": [8, 6, 2, 2]},  # boxes only: painted ignore
        {"image_id": 1, "category_id": 99, "segmentation": rle_of(box(0, 0, 1, 1))},
        {"image_id": 42, "category_id": 1, "segmentation": rle_of(box(0, 0, 1, 1))},
        {"image_id": 1, "category_id": 1, "segmentation": rle_of(box(0, 0, 1, 1)), "iscrowd": 2},
    ]
    listed = {"a.png": (W, H), "missing.png": (W, H), "b.png": (W + 1, H), "c.png": (W, H)}
    images, json_path = write_coco(tmp_path, annotations, images={"a.png": (W, H), "b.png": (W, H), "c.png": (W, H),
                                                                  "extra.png": (W, H)}, listed=listed)
    (images / "c.png").write_bytes(b"garbage")
    table = coco_class_table(json.loads(json_path.read_text()))
    found, problems = targets(images, json_path, table)
    assert list(found) == ["a.png"]
    assert problems.counts == {"image_missing": 1, "size_mismatch": 1, "unreadable_image": 1, "bad_annotation": 5,
                               "no_segmentation": 1, "annotation_without_image": 1, "image_not_in_annotations": 1}
    examples = " | ".join(m for ms in problems.examples.values() for m in ms)
    for text in ("annotations[0] (id 1): segmentation[0] must be a polygon", "annotations[1] (id 2): RLE size [5, 5]",
                 "annotations[2] (id 3): RLE counts must be", "annotations[3] (id 4): no segmentation; its box is painted",
                 "category_id 99 is not in categories", "image_id 42 is not in images", "iscrowd must be 0 or 1",
                 "images[1]: ", "missing.png is not on disk", "JSON size is 13x10, its image b.png is 12x10",
                 "extra.png: not in", "c.png"):
        assert text in examples, text
    target = found["a.png"]
    assert (target[6:8, 8:10] == 255).all() and target[0, 0] == 255  # box of the box-only object; unknown category
    assert (target[target != 255] == 0).all()


# -- dataset_convert ----------------------------------------------------------------------------

def random_masks(root: Path, count: int, classes: int, seed: int = 0) -> tuple[Path, Path]:
    """Blobby random masks (with holes, touching regions and ignore pixels) and plain images."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for i in range(count):
        coarse = rng.integers(0, classes, (5, 6))
        ids = np.kron(coarse, np.ones((4, 4), np.int64))[: 18, : 22].astype(np.uint8)
        ids[rng.random(ids.shape) < 0.05] = 255
        Image.fromarray(ids, "L").save(root / "masks" / f"m{i}.png")
        Image.new("RGB", (22, 18)).save(root / "images" / f"m{i}.jpg")
    return root / "images", root / "masks"


@pytest.mark.parametrize("encoding", ["polygons", "rle"])
def test_masks_to_coco_to_masks_is_exact(tmp_path, encoding):
    images, masks = random_masks(tmp_path / "src", 4, 4)
    table = ClassTable.build(["background", "a", "b", "c"])
    report = masks_to_coco(images, masks, tmp_path / "ann.json", table, encoding)
    assert report["images"] == 4
    document = json.loads((tmp_path / "ann.json").read_text())
    assert [c["name"] for c in document["categories"]] == ["ignore", "a", "b", "c"]
    kinds = {type(a["segmentation"]).__name__ for a in document["annotations"] if not a["iscrowd"]}
    assert kinds == ({"list", "dict"} if encoding == "polygons" else {"dict"})  # holes stay RLE
    assert report["regions_as_rle"] == sum(isinstance(a["segmentation"], dict) for a in document["annotations"]
                                           if not a["iscrowd"]) * (encoding == "polygons")
    back = coco_to_masks(images, tmp_path / "ann.json", tmp_path / "back", ClassTable.build(table.names))
    assert back["masks"] == 4 and back["problems"]["counts"] == {}
    for i in range(4):
        original = table.lookup(read_mask(masks / f"m{i}.png").ids)
        np.testing.assert_array_equal(read_mask(tmp_path / "back" / "masks" / f"m{i}.png").ids, original)


def test_coco_to_masks_writes_palette_masks_images_list_and_a_class_table_that_reads_them_back(tmp_path):
    polygon = [2.0, 1.0, 6.0, 1.0, 6.0, 5.0, 2.0, 5.0]
    images, json_path = write_coco(tmp_path / "src", [
        {"image_id": 1, "category_id": 2, "segmentation": [polygon]},
        {"image_id": 2, "category_id": 1, "segmentation": rle_of(box(0, 0, 3, 3)), "iscrowd": 1}])
    out = tmp_path / "out"
    report = coco_to_masks(images, json_path, out)
    assert report["classes"] == ["background", "car", "person"] and report["masks"] == 2
    written = Image.open(out / "masks" / "a.png")
    assert written.mode == "P"
    assert np.asarray(written)[2, 3] == 2 and np.asarray(Image.open(out / "masks" / "b.png"))[0, 0] == 255
    assert (out / "images.txt").read_text().split() == ["../src/images/a.png", "../src/images/b.png"]
    classes = json.loads((out / "classes.json").read_text())
    assert classes[2] == {"name": "person", "ids": [2], "colour": [0, 128, 0]}
    # the written masks pair with their images and read back through the written class table
    table = ClassTable.build(classes)
    problems = MaskProblems()
    items = pair_masks(images, out / "masks", problems)
    scan = scan_targets(items, table)
    assert problems.counts == {} and scan.problems.counts == {} and scan.pixel_counts[2] == 16
    # and round-trip to COCO again
    masks_to_coco(images, out / "masks", tmp_path / "again.json", table)
    again = coco_to_masks(images, tmp_path / "again.json", tmp_path / "again", table)
    for name in ("a", "b"):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "again" / "masks" / f"{name}.png")),
                                      np.asarray(Image.open(out / "masks" / f"{name}.png")))
    assert again["problems"]["counts"] == {}


def test_outline_polygons_trace_pixel_edges_and_report_holes():
    ring = np.zeros((5, 5), bool)
    ring[1:4, 1:4] = True
    ring[2, 2] = False
    outer, hole = outline_polygons(ring)
    assert outer == [1.0, 1.0, 4.0, 1.0, 4.0, 4.0, 1.0, 4.0]
    assert sorted(zip(hole[::2], hole[1::2])) == [(2.0, 2.0), (2.0, 3.0), (3.0, 2.0), (3.0, 3.0)]
    rng = np.random.default_rng(1)
    for _ in range(50):  # hole-free regions, touching corners included, rasterise back exactly
        from scipy.ndimage import binary_fill_holes
        region = binary_fill_holes(rng.random((9, 11)) < 0.5)
        polygons = outline_polygons(region)
        if not region.any():
            assert polygons == []
            continue
        decoded = coco_decode(coco_mask.merge(coco_mask.frPyObjects(polygons, 9, 11))).astype(bool)
        assert np.array_equal(decoded, region)
