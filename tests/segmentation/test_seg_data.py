"""SegmentationData: batches, held-out val, problems named with files, pixel counts, class checks, COCO
input and dataset_convert; the joint augmentation keeps every mask pixel on its image pixel."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import binary_dilation, binary_erosion

from transferkit.data.demo import SHAPE_CLASSES, build_demo
from transferkit.errors import DataError, SpecError
from transferkit.spec import load_spec
from transferkit.tasks.segmentation.data import (SegmentationData, SegmentationInferenceImages, SegmentationTransform,
                                                 collate_inference, convert_dataset, resize_mask, restore_size)
from transferkit.tasks.segmentation.spec import SegAugmentationConfig, SegmentationSpec
from transferkit.vision.masks import read_mask

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
CLASSES = "data.classes=[background,circle,square,triangle]"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    summary = build_demo("shapes_seg", out, seed=1, num_train=6, num_val=3, size=64)
    return out, summary


def spec_for(root, *overrides: str, val: bool = True) -> SegmentationSpec:
    keys = [f"data.train_images={root}/train/images", f"data.train_masks={root}/train/masks",
            "data.image_width=64", "data.image_height=64", "train.num_workers=0", "train.batch_size=4", CLASSES]
    if val:
        keys += [f"data.val_images={root}/val/images", f"data.val_masks={root}/val/masks"]
    return load_spec(SegmentationSpec, None, keys + list(overrides))


def test_batches_are_normalised_images_and_int64_masks_at_the_input_size(demo):
    root, _ = demo
    data = SegmentationData(spec_for(root, "data.image_width=96", "data.augmentation.rotation=20"), MEAN, STD)
    assert data.classes == list(SHAPE_CLASSES) and data.class_ids == {0: 0, 1: 1, 2: 2, 3: 3}
    images, masks, skipped = next(iter(data.train_dataloader()))
    assert images.shape == (4, 3, 64, 96) and images.dtype == torch.float32
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert masks.shape == (4, 64, 96) and masks.dtype == torch.int64 and skipped == []
    assert set(masks.unique().tolist()) <= {0, 1, 2, 3, 255}
    images, masks, skipped = next(iter(data.val_dataloader()))
    assert images.shape == (3, 3, 64, 96) and set(masks.unique().tolist()) <= {0, 1, 2, 3}  # no ignore at eval
    assert images.is_contiguous()
    assert data.model_inputs((images, masks)) is images
    assert sum(len(b) for b in data.calibration_batches(5, 2)) == 5


def test_val_is_held_out_of_train_by_val_split_reproducibly(demo):
    root, _ = demo
    spec = spec_for(root, "data.val_split=0.5", val=False)
    first, second = SegmentationData(spec, MEAN, STD), SegmentationData(spec, MEAN, STD)
    assert len(first.train_items) == 3 and len(first.val_items) == 3
    assert first.val_items == second.val_items and not set(first.train_items) & set(first.val_items)
    assert first.spec_keys["val"] == "data.val_split=0.5 of data.train_images"
    with pytest.raises(SpecError, match="no validation data"):
        SegmentationData(spec_for(root, "data.val_split=0", val=False), MEAN, STD)


def test_pixel_counts_are_the_training_masks_pixels_per_class(demo):
    root, summary = demo
    data = SegmentationData(spec_for(root), MEAN, STD)
    counts = data.pixel_counts
    assert counts.dtype == np.int64
    assert counts.tolist() == [summary["counts"]["train"]["pixels"][c] for c in SHAPE_CLASSES]


def test_every_bad_pair_is_counted_and_named_and_never_stops_the_run(demo, tmp_path, caplog):
    root, _ = demo
    import shutil

    shutil.copytree(root / "train", tmp_path / "train")
    shutil.copytree(root / "val", tmp_path / "val")
    masks, images = tmp_path / "train" / "masks", tmp_path / "train" / "images"
    ids = np.asarray(Image.open(masks / "000000.png")).copy()
    ids[:2, :2] = 7  # an id in no class
    Image.fromarray(ids).save(masks / "000000.png")
    (masks / "000001.png").unlink()  # image without mask
    Image.new("L", (64, 64)).save(masks / "orphan.png")  # mask without image
    Image.new("L", (32, 64)).save(masks / "000002.png")  # size mismatch
    noisy = np.random.default_rng(0).integers(0, 4, (64, 64), dtype=np.uint8)
    Image.fromarray(noisy).save(masks / "000003.png")
    data = (masks / "000003.png").read_bytes()
    (masks / "000003.png").write_bytes(data[: len(data) - 40])  # truncated: header fine, pixels not
    with caplog.at_level(logging.WARNING, logger="transferkit"):
        module = SegmentationData(spec_for(tmp_path), MEAN, STD)
        module.train_dataloader()
    problems = module.problems["train"]
    assert problems["counts"] == {"mask_without_image": 1, "image_without_mask": 1, "size_mismatch": 1,
                                  "unreadable_mask": 1}
    assert problems["unknown_ids"] == {"7": {"pixels": 4, "masks": 1, "files": [str(masks / "000000.png")]}}
    assert "000003.png" in problems["examples"]["unreadable_mask"][0]
    assert [it.image.name for it in module.train_items] == ["000000.png", "000004.png", "000005.png"]
    assert str(images / "000003.png") in module.skipped  # found when the split was decoded, before training
    text = caplog.text
    assert "orphan.png" in text and "pixels of id 7" in text and "000003.png" in text
    masks_seen = torch.cat([m for _, m, _ in module.train_dataloader()])
    assert masks_seen.shape[0] == 3


def test_a_class_without_training_pixels_is_a_warning(demo):
    root, _ = demo
    data = SegmentationData(spec_for(root, "data.classes=[background,circle,square,triangle,hexagon]"), MEAN, STD)
    assert data.pixel_counts[4] == 0
    assert any("no pixels of class(es) ['hexagon']" in w and "cannot be learned" in w for w in data.warnings)
    data.val_dataloader()
    assert any(w.startswith("val masks: no pixels of class(es) ['hexagon']") for w in data.warnings)


def test_class_table_from_the_model_and_mistakes_in_data_classes(demo):
    root, _ = demo
    data = SegmentationData(spec_for(root, "data.classes=null"), MEAN, STD, classes=list(SHAPE_CLASSES))
    assert data.classes == list(SHAPE_CLASSES)
    with pytest.raises(SpecError, match="are not the model's classes"):
        SegmentationData(spec_for(root, "data.classes=[background,circle]"), MEAN, STD, classes=list(SHAPE_CLASSES))
    with pytest.raises(SpecError, match="data.classes is not set"):
        SegmentationData(spec_for(root, "data.classes=null"), MEAN, STD)
    with pytest.raises(SpecError, match="no data"):
        SegmentationData(load_spec(SegmentationSpec, None, [CLASSES]), MEAN, STD)


def test_several_source_ids_train_as_one_class(demo):
    root, _ = demo
    data = SegmentationData(spec_for(root, "data.classes=[background,{name: shape, ids: [1, 2, 3]}]"), MEAN, STD)
    assert data.class_ids == {0: 0, 1: 1, 2: 1, 3: 1}
    _, masks, _ = next(iter(data.val_dataloader()))
    assert set(masks.unique().tolist()) == {0, 1}


def test_coco_input_gives_the_same_masks_as_the_png_folders(demo, tmp_path):
    root, _ = demo
    converted = tmp_path / "coco"
    spec = spec_for(root, f"dataset_convert.output_format=coco")
    report = convert_dataset(spec, converted)
    assert set(report) == {"train", "val"} and report["train"]["images"] == 6
    coco_spec = spec_for(root, "data.format=coco", "data.classes=null",
                         f"data.train_masks={converted}/train/annotations.json",
                         f"data.val_masks={converted}/val/annotations.json")
    from_coco = SegmentationData(coco_spec, MEAN, STD)
    from_png = SegmentationData(spec_for(root), MEAN, STD)
    assert from_coco.classes == list(SHAPE_CLASSES)  # background + the categories
    assert from_coco.pixel_counts.tolist() == from_png.pixel_counts.tolist()
    _, coco_masks, _ = next(iter(from_coco.val_dataloader()))
    _, png_masks, _ = next(iter(from_png.val_dataloader()))
    assert torch.equal(coco_masks, png_masks)
    # and back: COCO -> palette masks identical to the demo's
    back = convert_dataset(coco_spec.model_copy(update={"dataset_convert": coco_spec.dataset_convert.model_copy(
        update={"output_format": "masks"})}), tmp_path / "back")
    assert back["val"]["masks"] == 3
    for name in ("000000", "000002"):
        assert np.array_equal(read_mask(tmp_path / "back" / "val" / "masks" / f"{name}.png").ids,
                              read_mask(root / "val" / "masks" / f"{name}.png").ids)
    with pytest.raises(SpecError, match="already masks"):
        convert_dataset(spec_for(root), tmp_path / "x")


# -- augmentation -------------------------------------------------------------------------------

SHAPE_COLOUR = (255, 0, 255)


def painted_pair(seed: int = 0) -> tuple[Image.Image, np.ndarray]:
    """A 80x60 image of green noise with a magenta triangle and its mask (1 on the triangle)."""
    from skimage.draw import polygon

    rng = np.random.default_rng(seed)
    pixels = np.stack([rng.integers(0, 60, (60, 80)), rng.integers(120, 256, (60, 80)),
                       rng.integers(0, 60, (60, 80))], axis=2).astype(np.uint8)
    mask = np.zeros((60, 80), np.int64)
    rows, cols = polygon([8, 50, 40], [10, 20, 70], shape=mask.shape)
    mask[rows, cols] = 1
    pixels[mask == 1] = SHAPE_COLOUR
    return Image.fromarray(pixels), mask


def as_rgb(image: torch.Tensor) -> np.ndarray:
    return ((image * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]) * 255).permute(1, 2, 0).numpy()


def test_augmented_masks_stay_on_the_painted_image_pixels():
    image, mask = painted_pair()
    augment = SegAugmentationConfig(horizontal_flip=0.5, vertical_flip=0.5, scale=(0.6, 1.8), rotation=40,
                                    color_jitter=0.0, hue=0.0)
    transform = SegmentationTransform(64, 48, MEAN, STD, 255, augment)
    torch.manual_seed(0)
    seen_ignore = seen_flip = 0
    for _ in range(40):
        pixels, target = transform(image, mask)
        assert pixels.shape == (3, 48, 64) and target.shape == (48, 64) and target.dtype == torch.int64
        assert set(target.unique().tolist()) <= {0, 1, 255}
        rgb, labels = as_rgb(pixels), target.numpy()
        magenta = (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] > 200)
        inside = binary_erosion(labels == 1, iterations=2)
        assert magenta[inside].all()  # every inner triangle pixel of the mask is a triangle pixel of the image
        assert not magenta[~binary_dilation(labels == 1, iterations=2)].any()  # and no triangle pixel is elsewhere
        padded = binary_erosion(labels == 255, iterations=2)
        assert (np.abs(rgb[padded]) < 1.0).all()  # ignore where rotation / zoom-out left no image (black)
        seen_ignore += bool((labels == 255).any())
        seen_flip += bool(magenta.any())
    assert seen_ignore > 5 and seen_flip > 30


def test_photometric_jitter_changes_the_image_only():
    image, mask = painted_pair()
    plain = SegmentationTransform(80, 60, MEAN, STD, 255, None)
    jitter = SegmentationTransform(80, 60, MEAN, STD, 255, SegAugmentationConfig(
        horizontal_flip=0, scale=(1, 1), color_jitter=0.8, hue=0.3))
    torch.manual_seed(1)
    base_pixels, base_mask = plain(image, mask)
    pixels, target = jitter(image, mask)
    assert torch.equal(target, base_mask) and torch.equal(base_mask, torch.from_numpy(mask))
    assert (pixels - base_pixels).abs().mean() > 0.05


def test_evaluation_resizes_masks_nearest_neighbour_without_new_values():
    image, mask = painted_pair()
    mask = mask.copy()
    mask[0:5, 0:5] = 255
    pixels, target = SegmentationTransform(32, 32, MEAN, STD, 255, None)(image, mask)
    assert pixels.shape == (3, 32, 32) and target.shape == (32, 32)
    assert set(target.unique().tolist()) == {0, 1, 255}
    np.testing.assert_array_equal(resize_mask(np.arange(10)[None].repeat(2, 0), 4, 1).numpy(), [[1, 3, 6, 8]])


def test_inference_images_keep_their_size_to_restore_the_predicted_mask(tmp_path):
    Image.new("RGB", (50, 30), (10, 20, 30)).save(tmp_path / "a.png")
    (tmp_path / "bad.png").write_bytes(b"nope")
    dataset = SegmentationInferenceImages([tmp_path / "a.png", tmp_path / "bad.png"], 64, 32, MEAN, STD, 10_000)
    images, infos, skipped = collate_inference([dataset[0], dataset[1]])
    assert images.shape == (1, 3, 32, 64) and infos[0].size == (50, 30) and infos[0].path.name == "a.png"
    assert len(skipped) == 1 and skipped[0].startswith(str(tmp_path / "bad.png"))
    prediction = torch.zeros(32, 64, dtype=torch.int64)
    prediction[:, 32:] = 2
    restored = restore_size(prediction, infos[0].size)
    assert restored.shape == (30, 50) and restored.dtype == np.int64
    assert (restored[:, :24] == 0).all() and (restored[:, 26:] == 2).all()


def test_spec_holds_the_cli_contract_keys():
    spec = load_spec(SegmentationSpec, None, [
        "data.train_images=a", "data.train_masks=b", "data.val_images=c", "data.val_masks=d",
        "data.classes=[background,road,car]", "data.ignore_index=255", "data.image_width=128",
        "data.image_height=128", "model.backbone=mobilenet_v2", "evaluation.predictions=p", "inference.images=i"])
    assert spec.data.classes == ["background", "road", "car"] and spec.data.ignore_index == 255
    assert (spec.data.image_width, spec.data.image_height, spec.model.backbone) == (128, 128, "mobilenet_v2")
    assert set(SegmentationSpec.model_fields) == {"data", "model", "loss", "train", "evaluation", "inference", "prune",
                                                  "export", "dataset_convert"}
    with pytest.raises(SpecError, match="data.image_width: value error, must be a multiple of 32, e.g. 96 or 128"):
        load_spec(SegmentationSpec, None, ["data.image_width=100"])
    with pytest.raises(SpecError, match=r"unknown key 'data.classes.0.entry.idz'"):
        load_spec(SegmentationSpec, None, ["data.classes=[{name: a, idz: [1]}]"])
    with pytest.raises(SpecError, match="loss.class_weights.list.1: input should be greater than or equal to 0"):
        load_spec(SegmentationSpec, None, ["loss.class_weights=[1, -1]"])
    entry = load_spec(SegmentationSpec, None, ["data.classes=[bg, {name: car, ids: [3, 4], colour: [1, 2, 3]}]"])
    assert entry.data.classes[1].ids == [3, 4] and entry.data.classes[1].colour == (1, 2, 3)
    assert json.loads(entry.model_dump_json())["data"]["classes"][0] == "bg"


def test_every_spec_key_has_a_one_line_description():
    from pydantic import BaseModel

    from transferkit.tasks.segmentation.spec import SegClassConfig

    def walk(model: type[BaseModel], prefix: str = ""):
        for name, info in model.model_fields.items():
            yield prefix + name, info.description
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                yield from walk(annotation, f"{prefix}{name}.")

    keys = dict(walk(SegmentationSpec)) | dict(walk(SegClassConfig, "data.classes[]."))
    missing = [key for key, text in keys.items() if not text or "\n" in text]
    assert not missing
    assert {"data.augmentation.scale", "loss.dice_weight", "inference.polygons", "dataset_convert.coco_encoding",
            "data.classes[].colour", "model.decoder_channels"} <= set(keys)
