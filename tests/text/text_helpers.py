"""Helpers of the text tests (both tasks): the CLI as a function, a tiny random BERT as spec overrides, a
checkpoint's metadata, an unreachable zoo, and the checks every task's default_spec and user mistakes pass."""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from transferkit.cli import main
from transferkit.engine.meta import ModelMeta
from transferkit.errors import ModelError
from transferkit.spec import load_spec
from transferkit.tasks import get_task

# A one-layer, 32-wide BERT on MiniLM's tokenizer and vocabulary: learns the tiny sets in a few dozen steps.
TINY = ["model.pretrained=false",
        "model.config_overrides={num_hidden_layers: 1, hidden_size: 32, num_attention_heads: 2, intermediate_size: 64}",
        "train.learning_rate=1e-2", "train.backbone_lr_scale=1", "train.batch_size=8", "train.histograms=false"]


def tkit(*args) -> int:
    return main([str(a) for a in args])


def meta_of(path: Path) -> ModelMeta:
    """The ModelMeta a checkpoint carries."""
    return ModelMeta.from_dict(torch.load(path, weights_only=True)["transferkit"])


def no_zoo(monkeypatch, tmp_path: Path) -> None:
    """Make every encoder source unreachable: an empty TRANSFERKIT_HOME and no zoo or hub look-ups at all."""
    def refuse(*args, **kwargs):
        raise ModelError("the zoo was asked for a model folder")

    monkeypatch.setenv("TRANSFERKIT_HOME", str(tmp_path / "empty_home"))
    monkeypatch.setattr("transferkit.zoo.huggingface.find_model_folder", refuse)
    monkeypatch.setattr("transferkit.zoo.huggingface.resolve_model_folder", refuse)
    monkeypatch.setattr("transferkit.text.task.find_backbone", refuse)


def onnx_alone(onnx: Path, run: Path, monkeypatch, tmp_path: Path) -> Path:
    """A copy of `onnx` alone in a folder, with the training run deleted and no zoo (no_zoo): what inference from
    the .onnx may use is the file itself."""
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(onnx, alone / onnx.name)
    shutil.rmtree(run)
    no_zoo(monkeypatch, tmp_path)
    return alone / onnx.name


def default_spec(task: str, tmp_path: Path, capsys):
    """The spec `tkit TASK default_spec` prints, loaded back from a file."""
    assert tkit(task, "default_spec") == 0
    path = tmp_path / "spec.yaml"
    path.write_text(capsys.readouterr().out)
    from transferkit.api import spec_schema

    return load_spec(spec_schema(get_task(task)), path)  # as every verb reads it: with the shared automl section


def assert_one_line_errors(task: str, cases: list[tuple[list, str]], capsys) -> None:
    """Each (arguments, expected text) case exits 2 with one line on stderr holding the text, no traceback."""
    for args, expected in cases:
        assert tkit(task, *args) == 2, args
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
