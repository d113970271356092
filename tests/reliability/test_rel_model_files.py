"""Model files a user points at: a checkpoint whose pickle holds more than tensors is refused for safety
(as -m and when training resumes from it), in words of ours, never torch's advice to turn weights_only
off; -e / -m naming a folder or a device says what it is; `tkit model import-onnx` takes --overwrite and
refuses names that are not one plain word."""
from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rel_helpers import CliResult, FAST

from transferkit.cli import main


class _Trap:
    """Unpickling this calls os.system (posix.system): a module torch's weights-only loader blocks outright."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _assert_refused_for_safety(message: str, path: Path) -> None:
    assert str(path) in message and "refused for safety" in message and "not plain tensors" in message
    for torch_advice in ("weights_only", "Re-running", "trusted source", "PyTorch 2.6"):
        assert torch_advice not in message, message


@pytest.fixture
def trapped(trained, tmp_path) -> tuple[Path, Path]:
    """(a real checkpoint plus one object whose unpickling runs a shell command, the file it would create)."""
    marker = tmp_path / "code_ran.marker"
    ckpt = torch.load(trained / "best.ckpt", map_location="cpu", weights_only=True)
    ckpt["callbacks"] = {"innocent_looking": _Trap(marker)}
    path = tmp_path / "trap.ckpt"
    torch.save(ckpt, path)
    return path, marker


def test_a_checkpoint_holding_a_blocked_module_object_is_refused_for_safety(trapped, digits, tmp_path, tkit):
    path, marker = trapped
    result = tkit("evaluate", "-r", tmp_path / "out", "-m", path, f"data.val_dir={digits / 'val'}", *FAST)
    _assert_refused_for_safety(result.assert_user_error(), path)
    assert "posix.system" in result.error
    assert not marker.exists()


def test_an_old_style_pickle_file_is_refused_for_safety(tmp_path, digits, tkit):
    marker = tmp_path / "code_ran.marker"
    path = tmp_path / "legacy.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {}, "x": _Trap(marker)}, f, protocol=2)
    result = tkit("evaluate", "-r", tmp_path / "out", "-m", path, f"data.val_dir={digits / 'val'}", *FAST)
    _assert_refused_for_safety(result.assert_user_error(), path)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:The dirpath has changed")
def test_resuming_from_a_trapped_last_ckpt_is_refused_in_one_line(trained, trapped, digits, tmp_path, tkit):
    path, marker = trapped
    run = Path(shutil.copytree(trained, tmp_path / "run"))
    shutil.copyfile(path, run / "last.ckpt")
    result = tkit("train", "-r", run, f"data.train_dir={digits / 'train'}", f"data.val_dir={digits / 'val'}", *FAST,
                  "train.resume=true", "train.epochs=2")
    _assert_refused_for_safety(result.assert_user_error(), run / "last.ckpt")
    assert not marker.exists()


# -- -e and -m that are not files ----------------------------------------------------------------------

@pytest.mark.parametrize("what, expected", [("folder", "is a folder"), ("device", "is a character device")])
def test_spec_that_is_not_a_file_says_what_it_is(what, expected, tmp_path, tkit):
    spec = tmp_path if what == "folder" else Path(os.devnull)
    result = tkit("train", "-e", spec, "-r", tmp_path / "run")
    message = result.assert_user_error(str(spec), expected, "-e")
    assert "does not exist" not in message


@pytest.mark.parametrize("what, expected", [("folder", "is a folder"), ("device", "is a character device"),
                                            ("onnx_folder", "is a folder")])
def test_model_that_is_not_a_file_says_what_it_is(what, expected, trained, digits, tmp_path, tkit):
    model = {"folder": trained, "device": Path(os.devnull), "onnx_folder": tmp_path / "model.onnx"}[what]
    model.mkdir(exist_ok=True) if what == "onnx_folder" else None
    result = tkit("evaluate", "-r", tmp_path / "out", "-m", model, f"data.val_dir={digits / 'val'}", *FAST)
    message = result.assert_user_error(str(model), expected, "-m")
    assert "does not exist" not in message


# -- tkit model import-onnx -------------------------------------------------------------------------------

def _small_onnx(path: Path) -> Path:
    """image [N,3,16,16] -> Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> [N,4]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def tensor(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name=name)

    nodes = [helper.make_node("Conv", ["image", "w", "b"], ["conv"], name="conv", pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
             helper.make_node("GlobalAveragePool", ["relu"], ["pool"], name="pool"),
             helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1),
             helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
                              initializer=[tensor("w", 8, 3, 3, 3), tensor("b", 8), tensor("fc.w", 4, 8), tensor("fc.b", 4)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


@pytest.fixture
def model_cli(tmp_path, monkeypatch, capsys):
    """model_cli(*argv) -> CliResult of `tkit model ...`, with a private TRANSFERKIT_HOME."""
    monkeypatch.setenv("TRANSFERKIT_HOME", str(tmp_path / "home"))

    def run(*argv) -> CliResult:
        capsys.readouterr()
        rc = main(["model", *map(str, argv)])
        captured = capsys.readouterr()
        return CliResult(rc, captured.out, captured.err)
    return run


def test_import_onnx_again_needs_overwrite_which_the_cli_takes(model_cli, tmp_path):
    onnx_file = _small_onnx(tmp_path / "small.onnx")
    assert model_cli("import-onnx", "tiny_net", onnx_file).rc == 0
    message = model_cli("import-onnx", "tiny_net", onnx_file).assert_user_error("'tiny_net'", "already imported",
                                                                                 "--overwrite")
    assert "pass overwrite=True" not in message
    result = model_cli("import-onnx", "tiny_net", onnx_file, "--overwrite")
    assert result.rc == 0, result.err


@pytest.mark.parametrize("name", ["tiny\n", "tiny\r", "ti\x00ny", "../tiny", "a/b", "a\\b", " tiny", "tiny net"])
def test_import_onnx_refuses_names_that_are_not_one_plain_word(name, model_cli, tmp_path):
    onnx_file = _small_onnx(tmp_path / "small.onnx")
    result = model_cli("import-onnx", name, onnx_file)
    result.assert_user_error(repr(name), "letters, digits")
    onnx_dir = tmp_path / "home" / "onnx"
    assert not onnx_dir.exists() or not any(onnx_dir.iterdir())
