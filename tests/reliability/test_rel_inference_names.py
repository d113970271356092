"""Inference writes one output file per input image, never one over another: images with the same file
name in different folders (a/x.png, b/x.png) or the same stem in one folder (a/x.png, a/x.jpg).

Classification keeps each image's path under annotated/. Segmentation names masks/ and overlays/ by stem
(evaluation.predictions pairs them with images that way), so it refuses such names before any work or
write. (Detection: test_rel_detection_names.py.)"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from transferkit.cli import main

from rel_helpers import FAST, read_json


def _clashing_images(source: Path, root: Path) -> Path:
    """ROOT/a/x.png, ROOT/b/x.png and ROOT/a/x.jpg: three images, one file name stem."""
    for folder in ("a", "b"):
        (root / folder).mkdir(parents=True)
    pictures = sorted(p for p in source.rglob("*") if p.suffix in (".png", ".jpg"))
    Image.open(pictures[0]).convert("RGB").save(root / "a" / "x.png")
    Image.open(pictures[1]).convert("RGB").save(root / "b" / "x.png")
    Image.open(pictures[-1]).convert("RGB").save(root / "a" / "x.jpg", quality=95)
    return root


def test_classification_annotates_every_image_under_its_own_path(trained, digits, tmp_path, tkit):
    images = _clashing_images(digits / "val", tmp_path / "images")
    out = tmp_path / "inf"
    result = tkit("inference", "-r", out, "-m", trained / "best.ckpt", f"inference.images={images}",
                  "inference.annotate=true", *FAST)
    assert result.rc == 0, result.err
    assert read_json(out / "inference.json")["images"] == 3
    pictures = sorted(p.relative_to(out / "annotated").as_posix() for p in (out / "annotated").rglob("*.png"))
    assert pictures == ["a/x.jpg.png", "a/x.png.png", "b/x.png"]
    for name, source in (("a/x.png.png", "a/x.png"), ("b/x.png", "b/x.png")):
        with Image.open(out / "annotated" / name) as picture, Image.open(images / source) as original:
            assert picture.size == original.size


def test_classification_keeps_plain_names_for_a_flat_folder(trained, digits, tmp_path, tkit):
    images = tmp_path / "flat"
    images.mkdir()
    for i, picture in enumerate(sorted((digits / "val" / "0").glob("*.png"))[:2]):
        shutil.copyfile(picture, images / f"img{i}.png")
    out = tmp_path / "inf"
    assert tkit("inference", "-r", out, "-m", trained / "best.ckpt", f"inference.images={images}",
                "inference.annotate=true", *FAST).rc == 0
    assert sorted(p.name for p in (out / "annotated").iterdir()) == ["img0.png", "img1.png"]


# -- segmentation -----------------------------------------------------------------------------------

SEG_FAST = ["data.image_width=64", "data.image_height=64", "train.batch_size=4", "train.num_workers=0",
            "train.epochs=1", "train.histograms=false", "model.pretrained=false", "evaluation.batch_size=4",
            "data.classes=[background,circle,square,triangle]", "model.decoder_channels=[16,16,16,16,16]"]


@pytest.fixture(scope="module")
def seg_model(tmp_path_factory, _session_home) -> tuple[Path, Path]:
    """(best.ckpt of a one-epoch segmenter, its shapes data root)."""
    from transferkit.data.demo import build_demo

    root = tmp_path_factory.mktemp("shapes")
    build_demo("shapes_seg", root, seed=0, num_train=4, num_val=2, size=64)
    run = tmp_path_factory.mktemp("seg") / "train"
    rc = main(["segmentation", "train", "-r", str(run), f"data.train_images={root / 'train/images'}",
               f"data.train_masks={root / 'train/masks'}", f"data.val_images={root / 'val/images'}",
               f"data.val_masks={root / 'val/masks'}", *SEG_FAST])
    assert rc == 0
    return run / "best.ckpt", root


def test_segmentation_refuses_clashing_names_before_writing_a_mask(seg_model, tmp_path, capsys):
    model, root = seg_model
    images = _clashing_images(root / "val" / "images", tmp_path / "images")
    out = tmp_path / "inf"
    capsys.readouterr()
    rc = main(["segmentation", "inference", "-r", str(out), "-m", str(model), f"inference.images={images}",
               "inference.overlay=true", *SEG_FAST])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "masks/x.png" in err and str(images / "a" / "x.png") in err and "rename" in err
    assert not (out / "masks").exists() and not (out / "overlays").exists()
