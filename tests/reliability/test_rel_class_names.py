"""Class names are one line of printable text, wherever they are read: a COCO category, a class folder,
a CSV label, a YOLO names file or data.yaml, a KITTI label row, a spec's class list. A name holding a
newline or another control character is refused where it is read, naming the file and the category id,
line or folder (a newline in a name would make names.txt one line longer and shift every later class id
when read back). Hidden class folders are left out with a note, never silently."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from det_helpers import build_named_kitti, kitti_row
from rel_helpers import CliResult, FAST, read_json

from transferkit.cli import main
from transferkit.errors import DataError, TransferkitError
from transferkit.vision.convert import convert_dataset
from transferkit.vision.formats import read_kitti, read_names


@pytest.fixture(scope="module")
def kitti(tmp_path_factory) -> Path:
    return build_named_kitti(tmp_path_factory.mktemp("named"), num_train=3, num_val=1)


@pytest.fixture
def coco_with(kitti, tmp_path):
    """coco_with(name) -> (images, json) of the KITTI set as COCO with category 'one' (id 1) renamed `name`."""
    def make(name: str) -> tuple[Path, Path]:
        out = tmp_path / f"coco{len(list(tmp_path.glob('coco*')))}"
        convert_dataset("kitti", kitti / "train" / "images", kitti / "train" / "labels", "coco", out)
        document = read_json(out / "train.json")
        for category in document["categories"]:
            if category["name"] == "one":
                category["name"] = name
        path = out / "renamed.json"
        path.write_text(json.dumps(document), encoding="utf-8")
        return out / "train" / "images", path
    return make


def run(*argv) -> CliResult:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return CliResult(rc, out.getvalue(), err.getvalue())


def test_coco_category_with_a_newline_is_refused_before_a_names_file_is_written(coco_with, tmp_path):
    images, annotations = coco_with("x\ny")
    out = tmp_path / "yolo"
    result = run("detectnet_v2", "dataset_convert", "data.format=coco", f"data.train_images={images}",
                 f"data.train_labels={annotations}", "dataset_convert.output_format=yolo",
                 f"dataset_convert.output_dir={out}")
    message = result.assert_user_error(str(annotations), "categories[0]", "(id 1)", r"'x\ny'", "control character")
    assert "\n" not in message
    assert not (out / "names.txt").exists()


@pytest.mark.parametrize("name", ["a\x1b[31mb", "tab\there", "line\u2028break", "del\x7f"])
def test_coco_category_with_any_control_character_is_refused(coco_with, name):
    images, annotations = coco_with(name)
    from transferkit.vision.formats import read_coco

    with pytest.raises(DataError, match=r"categories\[0\] \(id 1\)"):
        read_coco(images, annotations)


def test_spaces_and_other_scripts_are_class_names(coco_with):
    from transferkit.vision.formats import read_coco

    for name in ("traffic light", "猫", "ñandú"):
        images, annotations = coco_with(name)
        assert name in read_coco(images, annotations).classes


def test_yolo_names_file_line_with_a_form_feed_is_refused_not_split(kitti, tmp_path):
    """str.splitlines breaks at \\f, \\x1c, U+2028 ...: 'a\\fb' was read as two classes, shifting the rest."""
    names = tmp_path / "names.txt"
    names.write_text("zero\none\fextra\ntwo\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{names}:2: class name 'one\\x0cextra'"):
        read_names(names)


def test_yolo_data_yaml_name_with_a_newline_is_refused(tmp_path):
    data = tmp_path / "data.yaml"
    data.write_text('names: [zero, "x\\ny", two]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"names\[1\] is 'x\\ny'"):
        read_names(data)


def test_yolo_names_with_spaces_still_read(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("traffic light\r\nstop sign\r\n", encoding="utf-8")
    assert read_names(names) == ["traffic light", "stop sign"]


def test_kitti_label_name_with_an_escape_sequence_is_refused_naming_the_line(kitti, tmp_path):
    labels = Path(shutil.copytree(kitti / "train" / "labels", tmp_path / "labels"))
    first = sorted(labels.glob("*.txt"))[0]
    first.write_text(first.read_text() + kitti_row("\x1b[2Jzero", 1, 1, 20, 20) + "\n", encoding="utf-8")
    line = len(first.read_text().splitlines())
    with pytest.raises(DataError, match=rf"{first}:{line}: label name '\\x1b\[2Jzero'"):
        read_kitti(kitti / "train" / "images", labels)


def test_spec_class_list_with_a_control_character_is_refused(kitti):
    with pytest.raises(DataError, match=r"classes\[1\] is 'one\\n'"):
        read_kitti(kitti / "train" / "images", kitti / "train" / "labels", classes=["zero", "one\n", "two"])


# -- classification: folders and CSV lists --------------------------------------------------------------

def test_class_folder_with_a_newline_in_its_name_is_refused(digits, tmp_path, tkit):
    train = Path(shutil.copytree(digits / "train", tmp_path / "train"))
    (train / "2").rename(train / "two\nlines")
    result = tkit("train", "-r", tmp_path / "run", f"data.train_dir={train}", f"data.val_dir={digits / 'val'}", *FAST)
    result.assert_user_error("data.train_dir", "class folder", r"two\nlines", "rename the folder")
    assert not (tmp_path / "run" / "best.ckpt").exists()


def test_csv_label_with_a_quoted_newline_is_refused_not_joined(digits, tmp_path, tkit):
    """csv over str.splitlines() joined the two halves into 'xy', a class nobody named."""
    rows = (digits / "train.csv").read_text(encoding="utf-8").splitlines()
    path, _ = rows[1].rsplit(",", 1)
    csv = tmp_path / "train.csv"
    csv.write_text("\n".join([rows[0], f'{path},"x\ny"', *rows[2:]]) + "\n", encoding="utf-8")
    shutil.copytree(digits / "train", tmp_path / "train")
    result = tkit("train", "-r", tmp_path / "run", f"data.train_csv={csv}", f"data.val_dir={digits / 'val'}", *FAST)
    result.assert_user_error("data.train_csv", f"{csv}:2", r"'x\ny'")


def test_hidden_class_folder_is_left_out_with_a_note(digits, tmp_path, tkit):
    train = Path(shutil.copytree(digits / "train", tmp_path / "train"))
    shutil.copytree(train / "0", train / ".ipynb_checkpoints")
    result = tkit("train", "-r", tmp_path / "run", f"data.train_dir={train}", f"data.val_dir={digits / 'val'}", *FAST)
    assert result.rc == 0, result.err
    metrics = read_json(tmp_path / "run" / "metrics.json")
    assert metrics["classes"] == ["0", "1", "2"]
    notes = [w for w in metrics["warnings"] if ".ipynb_checkpoints" in w]
    assert len(notes) == 1 and "hidden" in notes[0] and "data.train_dir" in notes[0]
    assert "WARNING" in next(line for line in (tmp_path / "run" / "log.txt").read_text(encoding="utf-8").splitlines()
                             if ".ipynb_checkpoints" in line)


def test_segmentation_class_list_with_a_newline_is_refused(tmp_path):
    from transferkit.vision.masks import ClassTable

    with pytest.raises(TransferkitError, match=r"data.classes: class 'road\\n'"):
        ClassTable.build(["background", "road\n"])
