"""Helpers for the detection reliability tests: a tiny named KITTI set and the bad-label corpus.

The base set is the `kitti_digits` demo (64x64 pixels) with the digit labels renamed to words
(zero, one, two), so that a case-mismatched name ('Zero') and an unknown name ('zebra') can be
planted next to the real ones. `add_bad_kitti` plants one case of every kind the KITTI reader
must report and returns the counts it must report them with.
"""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from rel_helpers import encode, truncated_jpeg

NAMES = {"0": "zero", "1": "one", "2": "two"}
CLASSES_ARG = "data.classes=[zero,one,two,nine]"  # 'nine' is declared but has no objects anywhere
DN_FAST = [
    "model.pretrained=false", "data.image_width=64", "data.image_height=64", "train.batch_size=32",
    "train.num_workers=0", "train.epochs=1", "train.histograms=false", "evaluation.batch_size=32",
    "inference.batch_size=32", "inference.annotate=false",
]


def kitti_row(name: str, x1, y1, x2, y2, score: float | None = None) -> str:
    row = f"{name} 0.00 0 0.00 {x1} {y1} {x2} {y2} 0.00 0.00 0.00 0.00 0.00 0.00 0.00"
    return row if score is None else f"{row} {score}"


def build_named_kitti(root: Path, num_train: int, num_val: int) -> Path:
    """ROOT/{train,val}/{images,labels}: kitti_digits with the class names spelled as words."""
    from transferkit.data.demo import build_demo

    build_demo("kitti_digits", root, seed=0, num_train=num_train, num_val=num_val, width=64, height=64,
               classes="0,1,2")
    for label in root.glob("*/labels/*.txt"):
        rows = [NAMES[r.split(" ", 1)[0]] + " " + r.split(" ", 1)[1] for r in label.read_text().splitlines()]
        label.write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    return root


def data_args(images: Path, labels: Path, val_images: Path | None = None, val_labels: Path | None = None,
              ) -> list[str]:
    args = [f"data.train_images={images}", f"data.train_labels={labels}"]
    if val_images is not None:
        args += [f"data.val_images={val_images}", f"data.val_labels={val_labels}"]
    return args


# What add_bad_kitti plants, as the reader must count it (DataProblems.counts, unmapped_classes).
BAD_KITTI_COUNTS = {
    "wrong_field_count": 1, "non_numeric": 1, "inverted_box": 1, "outside_image": 1,
    "case_insensitive_match": 1, "label_not_utf8": 1, "missing_label_file": 1, "label_without_image": 1,
    "unreadable_image": 2, "class_without_objects": 1,
}
BAD_KITTI_UNMAPPED = {"zebra": 1}
BAD_KITTI_ROWS = 6  # rows planted in 000000.txt; only the 'Zero' row is kept
# Loaded by the reader (the header is fine), refused when decoded: counted in skipped_images.
TRUNCATED = "truncated.jpg"
UNREADABLE = ("zero_bytes.png", "text_named.jpg")


def add_bad_kitti(images: Path, labels: Path, seed: int = 0) -> dict:
    """Plant every bad-label case in a named KITTI split (at least 3 images, 64x64). Returns where."""
    first = labels / "000000.txt"
    bad_rows = [
        "zero 0.00 0 0.00 1 2 3",  # 7 fields
        kitti_row("one", "ten", 2, 30, 40),  # non-numeric
        kitti_row("two", 40, 2, 30, 40),  # x2 < x1
        kitti_row("zero", 70, 70, 90, 90),  # wholly outside the 64x64 image
        kitti_row("zebra", 1, 1, 20, 20),  # a class that is not trained
        kitti_row("Zero", 2, 2, 20, 20),  # case mismatch: counted as 'zero'
    ]
    first.write_text(first.read_text(encoding="utf-8") + "".join(r + "\n" for r in bad_rows), encoding="utf-8")
    (labels / "000001.txt").write_bytes((kitti_row("zéro", 1, 1, 20, 20) + "\n").encode("latin-1"))
    (labels / "000002.txt").unlink()  # image without a label file: kept, no objects
    (labels / "orphan.txt").write_text(kitti_row("one", 1, 1, 20, 20) + "\n", encoding="utf-8")
    good_row = kitti_row("two", 4, 4, 30, 30) + "\n"
    (images / "zero_bytes.png").write_bytes(b"")
    (images / "text_named.jpg").write_text("these are notes, not pixels\n", encoding="utf-8")
    (images / TRUNCATED).write_bytes(truncated_jpeg(seed))
    for stem in ("zero_bytes", "text_named", "truncated"):
        (labels / f"{stem}.txt").write_text(good_row, encoding="utf-8")
    return {"first_label": first, "not_utf8": labels / "000001.txt", "orphan": labels / "orphan.txt",
            "no_label": images / "000002.png", "truncated": images / TRUNCATED,
            "unreadable": [images / n for n in UNREADABLE]}


def write_coco(path: Path, images: list[dict], annotations: list[dict], categories: list[dict]) -> Path:
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}),
                    encoding="utf-8")
    return path


# -- EXIF-rotated images ------------------------------------------------------------------------

# The image as displayed (EXIF orientation applied): 96 wide, 64 high, dark, one white square.
SHOWN_W, SHOWN_H = 96, 64
WHITE_BOX = (56, 8, 88, 40)  # x1, y1, x2, y2 in displayed pixels (continuous: columns 56..87)
# Stored pixels -> displayed: orientation 6 rotates 90 degrees clockwise, 8 counter-clockwise.
STORE_FOR = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def exif_rotated_jpeg(orientation: int) -> bytes:
    """A JPEG stored 64 wide x 96 high whose EXIF orientation shows it 96 wide x 64 high, upright."""
    shown = Image.new("RGB", (SHOWN_W, SHOWN_H), (20, 20, 20))
    shown.paste((255, 255, 255), WHITE_BOX)
    stored = shown.transpose(STORE_FOR[orientation])
    assert stored.size == (SHOWN_H, SHOWN_W)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())
