"""Model families are looked up in a registry filled by the layers that build them, never branched on."""
import ast
import json
from pathlib import Path

import pytest
from torch import nn

from transferkit.errors import ModelError
from transferkit.vision.backbones import Backbone, build_backbone
from transferkit.zoo import families, family_names, get_family, register_family
from transferkit.zoo.entry import ModelEntry, entry_to_dict


def _imported_entry(home, **fields) -> ModelEntry:
    """An entry.json in the imported-models folder, the way a user-made entry reaches get_entry."""
    entry = ModelEntry(name="toy", architecture="toy", input_size=32, **fields)
    folder = home / "onnx" / "toy"
    folder.mkdir(parents=True)
    (folder / "entry.json").write_text(json.dumps(entry_to_dict(entry)))
    return entry


def test_every_family_is_registered_by_the_layer_that_builds_it():
    assert {"torchvision", "efficientnet_lite", "timm", "onnx", "huggingface"} <= set(family_names())


def test_registering_a_family_twice_is_refused(monkeypatch):
    monkeypatch.setattr(families, "_FAMILIES", dict(families._FAMILIES))
    with pytest.raises(ValueError, match="'torchvision' is already registered"):
        register_family("torchvision")(lambda *args: None)


def test_build_backbone_calls_the_builder_registered_for_the_entry_family(monkeypatch, isolated_home):
    monkeypatch.setattr(families, "_FAMILIES", dict(families._FAMILIES))
    calls = []

    @register_family("toyfamily")
    def build(entry, weights, source, out_stride):
        calls.append((entry.name, weights, source, out_stride))
        return Backbone([nn.Identity()], [3], [1], name=entry.name)

    _imported_entry(isolated_home, family="toyfamily")
    assert get_family("toyfamily") is build
    backbone = build_backbone("toy", pretrained=False, out_stride=16)
    assert backbone.name == "toy" and calls == [("toy", None, None, 16)]


def test_an_entry_of_an_unregistered_family_loads_and_fails_only_when_built(isolated_home):
    _imported_entry(isolated_home, family="nosuchfamily")  # no longer refused when the entry is made
    with pytest.raises(ModelError, match=r"'toy' has family 'nosuchfamily', which is not registered; "
                                         r"registered families: .*torchvision"):
        build_backbone("toy", pretrained=False)


def test_a_text_model_is_not_built_as_an_image_backbone():
    with pytest.raises(ModelError, match="'minilm-l6' is a text model .*not an image backbone"):
        build_backbone("minilm-l6", pretrained=False)


def test_an_image_task_refuses_a_text_backbone_before_asking_for_its_normalisation():
    from transferkit.tasks.classification import ClassificationTask

    with pytest.raises(ModelError, match="'minilm-l6' is a text model .*not an image backbone"):
        ClassificationTask().normalisation("minilm-l6")


def test_the_zoo_core_imports_no_vision_or_task_code():
    zoo = Path(families.__file__).parent
    imported = []
    for module in sorted(zoo.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):  # `from ..vision import x` -> "..vision"
                imported.append((module.name, "." * node.level + (node.module or "")))
            elif isinstance(node, ast.Import):
                imported += [(module.name, alias.name) for alias in node.names]
    assert len(imported) > 20  # the walk really saw the zoo's imports
    layers = ("..vision", "..tasks", "transferkit.vision", "transferkit.tasks")
    assert [(file, name) for file, name in imported if name.startswith(layers)] == []
