"""Mask files read as class ids (grey, palette indices, 16-bit, RGB colour tables), the class table's id
mapping and ignore id, image/mask pairing by stem, and every bad-data case counted with its file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferkit.errors import DataError, SpecError
from transferkit.vision.images import ImageError
from transferkit.vision.masks import (ClassTable, MaskError, MaskProblems, SegItem, default_palette, load_target,
                                      mask_png_bytes, pair_masks, read_mask, read_prediction, scan_targets)

IDS = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [255, 255, 0, 1]], np.uint8)  # 4 wide, 3 high


def test_grey_mask_reads_pixel_values_as_ids(tmp_path):
    Image.fromarray(IDS, "L").save(tmp_path / "m.png")
    source = read_mask(tmp_path / "m.png")
    assert source.ids.dtype == np.int64 and source.ids.shape == (3, 4)
    np.testing.assert_array_equal(source.ids, IDS)
    assert not source.colour


def test_palette_mask_reads_indices_not_colours(tmp_path):
    image = Image.fromarray(IDS, "L")
    palette = np.random.default_rng(0).integers(0, 256, (256, 3), dtype=np.uint8)  # colours unrelated to ids
    image.putpalette(palette.reshape(-1).tolist())
    image.save(tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").mode == "P"
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png").ids, IDS)


def test_sixteen_bit_mask_keeps_ids_above_255(tmp_path):
    ids = np.array([[0, 1000], [40000, 7]], np.uint16)
    Image.fromarray(ids).save(tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").mode.startswith("I")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png").ids, ids.astype(np.int64))
    table = ClassTable.build([{"name": "bg", "ids": [0]}, {"name": "thing", "ids": [1000, 40000]}])
    np.testing.assert_array_equal(table.lookup(read_mask(tmp_path / "m.png").ids), [[0, 1], [1, 255]])


def test_one_bit_mask_is_zero_and_one(tmp_path):
    Image.fromarray(IDS > 1).convert("1").save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png").ids, (IDS > 1).astype(np.int64))


def _colour_table() -> ClassTable:
    return ClassTable.build([{"name": "background", "colour": [0, 0, 0]},
                             {"name": "road", "ids": [7], "colour": [128, 64, 128]},
                             {"name": "car", "ids": [26], "colour": [0, 0, 142]}])


def test_rgb_colour_mask_maps_through_the_table_and_counts_unknown_colours(tmp_path):
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 1] = (128, 64, 128)
    rgb[0, 2] = (0, 0, 142)
    rgb[1, 0] = (1, 2, 3)  # in no class
    rgb[1, 1] = (1, 2, 3)
    Image.fromarray(rgb, "RGB").save(tmp_path / "m.png")
    table = _colour_table()
    source = read_mask(tmp_path / "m.png", table)
    assert source.colour
    np.testing.assert_array_equal(source.ids, [[0, 7, 26], [255, 255, 0]])  # each colour -> its class's first id
    assert source.unknown_colours == {(1, 2, 3): 2}
    np.testing.assert_array_equal(table.lookup(source.ids), [[0, 1, 2], [255, 255, 0]])


def test_rgba_colour_mask_reads_transparent_pixels_as_ignore(tmp_path):
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[0, 1] = (128, 64, 128, 255)
    rgba[0, 2] = (9, 9, 9, 0)  # transparent: ignored, not an unknown colour
    Image.fromarray(rgba, "RGBA").save(tmp_path / "m.png")
    source = read_mask(tmp_path / "m.png", _colour_table())
    np.testing.assert_array_equal(source.ids, [[0, 7, 255]])
    assert source.transparent == 1 and source.unknown_colours == {}


def test_rgb_file_with_equal_channels_is_a_grey_id_mask_unless_the_table_has_colours(tmp_path):
    Image.fromarray(IDS, "L").convert("RGB").save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png", ClassTable.build(["a", "b", "c", "d"])).ids, IDS)
    coloured = read_mask(tmp_path / "m.png", _colour_table())
    assert coloured.colour and set(coloured.unknown_colours) == {(1, 1, 1), (2, 2, 2), (3, 3, 3), (255, 255, 255)}


def test_default_class_colours_are_the_voc_palette_so_palette_masks_converted_to_rgb_still_read(tmp_path):
    table = ClassTable.build(["background", "aeroplane", "bicycle"])
    assert table.colours == [(0, 0, 0), (128, 0, 0), (0, 128, 0)]
    assert tuple(default_palette()[255]) == (224, 224, 192)
    Image.open(__import__("io").BytesIO(mask_png_bytes(IDS % 3 + (IDS == 255) * 255, table))).convert("RGB").save(
        tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png", table).ids, IDS % 3 + (IDS == 255) * 255)


def test_float_and_cmyk_masks_are_refused_with_the_file_named(tmp_path):
    Image.fromarray(IDS.astype(np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(MaskError, match=r"f\.tif: mask colour mode F holds no class ids"):
        read_mask(tmp_path / "f.tif")


def test_truncated_and_non_image_masks_raise_mask_or_image_errors(tmp_path):
    Image.fromarray(np.tile(IDS, (40, 40)), "L").save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"t\.png"):
        read_mask(tmp_path / "t.png")
    (tmp_path / "x.png").write_text("not a png")
    with pytest.raises(ImageError, match=r"x\.png"):
        read_mask(tmp_path / "x.png")


# -- the class table ----------------------------------------------------------------------------

def test_several_source_ids_map_to_one_class_and_unknown_ids_become_ignore():
    table = ClassTable.build(["background", {"name": "vehicle", "ids": [3, 4, 5]}, {"name": "person", "ids": [9]}],
                             ignore_index=255)
    ids = np.array([[0, 3, 4, 5], [9, 255, 6, 300]])
    np.testing.assert_array_equal(table.lookup(ids), [[0, 1, 1, 1], [2, 255, 255, 255]])
    assert table.unknown_ids(ids) == {6: 1, 300: 1}  # ignore_index is kept, not "unknown"
    assert table.index_of_id() == {0: 0, 3: 1, 4: 1, 5: 1, 9: 2}


def test_lookup_handles_ids_beyond_the_lookup_table_range():
    table = ClassTable.build(["a", {"name": "b", "ids": [70000]}], ignore_index=1000)
    np.testing.assert_array_equal(table.lookup(np.array([[0, 70000, 5, -1]])), [[0, 1, 1000, 1000]])


@pytest.mark.parametrize("classes, ignore, message", [
    (["a", {"name": "b", "ids": [0]}], 255, "source id 0 belongs to both 'a' and 'b'"),
    (["a", {"name": "b", "ids": [255]}], 255, "uses source id 255, which is data.ignore_index"),
    (["a", {"name": "b", "ids": [5]}], 1, "ignore_index=1 is a training class index"),
    (["car", "Car"], 255, "same name"),
    ([{"name": "a", "colour": [1, 2, 3]}, {"name": "b", "colour": [1, 2, 3]}], 255, "same colour"),
    ([], 255, "is empty"),
    ([{"name": "a", "ids": []}], 255, "ids is empty"),
])
def test_class_table_mistakes_are_spec_errors_naming_the_key(classes, ignore, message):
    with pytest.raises(SpecError, match=message):
        ClassTable.build(classes, ignore)


def test_palette_png_holds_training_indices_with_class_colours():
    table = ClassTable.build(["background", {"name": "road", "colour": [10, 20, 30]}])
    image = Image.open(__import__("io").BytesIO(mask_png_bytes(np.array([[0, 1], [255, 0]]), table)))
    assert image.mode == "P"
    np.testing.assert_array_equal(np.asarray(image), [[0, 1], [255, 0]])
    palette = np.array(image.getpalette()).reshape(-1, 3)
    assert tuple(palette[1]) == (10, 20, 30) and tuple(palette[255]) == (224, 224, 192)


# -- pairing ------------------------------------------------------------------------------------

def make_pairs(root: Path, images: dict[str, tuple[int, int]], masks: dict[str, tuple[int, int]],
               value: int = 1) -> tuple[Path, Path]:
    """images/<stem>.jpg and masks/<stem>.png of the given (w, h); each mask is `value` with a 0 border."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for stem, size in images.items():
        Image.new("RGB", size, (200, 10, 10)).save(root / "images" / f"{stem}.jpg")
    for stem, size in masks.items():
        ids = np.zeros(size[::-1], np.uint8)
        ids[1:-1, 1:-1] = value
        Image.fromarray(ids, "L").save(root / "masks" / f"{stem}.png")
    return root / "images", root / "masks"


def test_pairing_by_stem_counts_and_names_every_unpaired_file(tmp_path):
    images, masks = make_pairs(tmp_path, {"a": (8, 6), "b": (8, 6), "c": (8, 6)},
                               {"a": (8, 6), "b": (6, 8), "d": (8, 6)})
    problems = MaskProblems()
    items = pair_masks(images, masks, problems)
    assert [it.image.stem for it in items] == ["a"]
    assert items[0].mask == masks / "a.png" and items[0].size == (8, 6)
    assert problems.counts == {"mask_without_image": 1, "image_without_mask": 1, "size_mismatch": 1}
    assert "d.png: no image named d.*" in problems.examples["mask_without_image"][0]
    assert "c.jpg: no mask named c.*" in problems.examples["image_without_mask"][0]
    assert "b.png: mask is 6x8, its image b.jpg is 8x6" in problems.examples["size_mismatch"][0]


def test_mask_drawn_on_the_unrotated_pixels_of_an_exif_rotated_image_is_named_as_such(tmp_path):
    images, masks = make_pairs(tmp_path, {}, {"r": (8, 6)})
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: stored 8x6, upright 6x8
    Image.new("RGB", (8, 6)).save(images / "r.jpg", exif=exif.tobytes())
    problems = MaskProblems()
    assert pair_masks(images, masks, problems) == []
    message = problems.examples["size_mismatch"][0]
    assert "its image r.jpg is 6x8 after its EXIF orientation 6 (stored 8x6, which the mask matches" in message


def test_duplicate_stems_unreadable_files_and_jpeg_masks_are_counted(tmp_path):
    images, masks = make_pairs(tmp_path, {"a": (8, 6), "b": (8, 6), "c": (8, 6)}, {"a": (8, 6), "b": (8, 6)})
    Image.new("RGB", (8, 6)).save(images / "a.png")  # second image with stem a
    Image.new("L", (8, 6)).save(masks / "b.bmp")  # second mask with stem b
    (masks / "c.png").write_bytes(b"\x89PNG broken")
    Image.new("L", (8, 6)).save(masks / "e.jpg")
    Image.new("RGB", (8, 6)).save(images / "e.png")
    problems = MaskProblems()
    items = pair_masks(images, masks, problems)
    assert sorted(it.image.name for it in items) == ["a.jpg", "b.jpg", "e.png"]
    assert problems.counts == {"duplicate_image_stem": 1, "duplicate_mask_stem": 1, "unreadable_mask": 1,
                               "lossy_mask": 1}
    assert "c.png" in problems.examples["unreadable_mask"][0]
    assert "e.jpg: a JPEG mask" in problems.examples["lossy_mask"][0]


def test_folders_that_do_not_belong_together_are_a_data_error(tmp_path):
    images, masks = make_pairs(tmp_path, {"a": (8, 6)}, {"zz": (8, 6)})
    with pytest.raises(DataError, match=r"data.train_masks: none of the 1 masks .* is named like an image"):
        pair_masks(images, masks, MaskProblems())
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no mask files"):
        pair_masks(images, tmp_path / "empty", MaskProblems())


# -- decoding a split ---------------------------------------------------------------------------

def test_scan_counts_unknown_ids_per_id_with_files_and_pixels_per_class(tmp_path):
    images, masks = make_pairs(tmp_path, {"a": (5, 4), "b": (5, 4), "c": (5, 4)},
                               {"a": (5, 4), "b": (5, 4), "c": (5, 4)})
    ids = np.array([[0, 0, 1, 1, 7], [7, 7, 255, 0, 0], [0, 0, 0, 0, 0], [9, 0, 0, 0, 0]], np.uint8)
    Image.fromarray(ids, "L").save(masks / "b.png")
    Image.fromarray(np.full((4, 5), 255, np.uint8), "L").save(masks / "c.png")
    table = ClassTable.build(["background", "thing"])
    problems = MaskProblems()
    items = pair_masks(images, masks, problems)
    scan = scan_targets(items, table)
    assert scan.bad == {}
    # a: 6 inner pixels of class 1, 14 border pixels of 0; b: see ids; c: all ignored
    np.testing.assert_array_equal(scan.pixel_counts, [14 + 13, 6 + 2])
    assert scan.problems.unknown_ids == {7: {"pixels": 3, "masks": 1, "files": [str(masks / "b.png")]},
                                         9: {"pixels": 1, "masks": 1, "files": [str(masks / "b.png")]}}
    assert scan.problems.counts == {"mask_all_ignored": 1}
    assert "c.png: every pixel is ignore_index" in scan.problems.examples["mask_all_ignored"][0]
    report = scan.problems.as_dict()
    assert report["unknown_ids"]["7"]["pixels"] == 3  # JSON-ready keys
    assert any("pixels of id 7 in 1 masks" in line for line in scan.problems.summary_lines())
    np.testing.assert_array_equal(load_target(items[1], table)[1], [255, 255, 255, 0, 0])


def test_scan_names_a_mask_that_fails_to_decode_and_leaves_its_image_out(tmp_path):
    images, masks = make_pairs(tmp_path, {"a": (64, 64), "b": (64, 64)}, {"a": (64, 64), "b": (64, 64)})
    noisy = np.random.default_rng(0).integers(0, 2, (64, 64), dtype=np.uint8)
    Image.fromarray(noisy, "L").save(masks / "b.png")
    data = (masks / "b.png").read_bytes()
    items = pair_masks(images, masks, MaskProblems())  # headers still fine
    (masks / "b.png").write_bytes(data[: len(data) - 40])
    scan = scan_targets(items, ClassTable.build(["a", "b"]))
    assert list(scan.bad) == [str(images / "b.jpg")]
    assert scan.problems.counts == {"unreadable_mask": 1}
    assert "b.png" in scan.problems.examples["unreadable_mask"][0]


def test_read_prediction_checks_size_and_class_range(tmp_path):
    Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), "L").save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_prediction(tmp_path / "p.png", 3, (2, 2)), [[0, 1], [2, 1]])
    with pytest.raises(MaskError, match="holds class index 2"):
        read_prediction(tmp_path / "p.png", 2)
    with pytest.raises(MaskError, match="prediction is 2x2, its image is 3x2"):
        read_prediction(tmp_path / "p.png", 3, (3, 2))


def test_items_are_plain_picklable_records():
    import pickle

    item = SegItem(Path("a.png"), Path("m.png"), (4, 3))
    assert pickle.loads(pickle.dumps(item)) == item


def test_colourise_and_overlay_use_the_class_colours_and_leave_background_alone():
    from transferkit.vision.masks import colourise, overlay

    table = ClassTable.build(["background", {"name": "road", "colour": [200, 0, 0]}])
    indices = np.array([[0, 1], [255, 7]])
    np.testing.assert_array_equal(colourise(indices, table),
                                  [[[0, 0, 0], [200, 0, 0]], [[224, 224, 192], [0, 0, 0]]])
    image = np.full((2, 2, 3), 100, np.uint8)
    blended = overlay(image, indices, table, alpha=0.5)
    assert blended[0, 0].tolist() == [100, 100, 100] and blended[0, 1].tolist() == [150, 50, 50]
    with pytest.raises(ValueError, match="differ in size"):
        overlay(np.zeros((3, 2, 3), np.uint8), indices, table)
