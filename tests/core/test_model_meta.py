"""ModelMeta: typed metadata, its storage, and files written before it existed (tests/fixtures/v1)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from transferkit.api import load_predictor
from transferkit.engine.checkpoint import read_checkpoint
from transferkit.engine.meta import META_VERSION, InputSpec, ModelMeta, image_input, tensor_input
from transferkit.errors import ModelError
from transferkit.tasks import get_task

from cli_helpers import detection_data_args, run_cli as tkit

V1 = Path(__file__).parents[1] / "fixtures" / "v1"


def test_meta_round_trips_through_plain_data():
    meta = ModelMeta(task="t", classes=("a", "b"), backbone="mobilenet_v2",
                     inputs=(image_input(48, 64, (0.5,) * 3, (0.25,) * 3),
                             InputSpec("lengths", "int64", ("batch",), value_range=(1, 9))),
                     arch={"anchors": [[1.0, 2.0]]}, export={"nms": {"top_k": 5}}, history={"pruned_from": "x"})
    data = meta.to_dict()
    assert json.loads(json.dumps(data)) == data  # JSON-able, so weights_only loading accepts it too
    assert ModelMeta.from_dict(data) == meta
    assert data["version"] == META_VERSION


def test_example_inputs_follow_each_inputs_dtype_and_dynamic_axes():
    tokens = tensor_input(("length",), name="tokens", dtype="int64", value_range=(0, 7))
    meta = ModelMeta(task="t", classes=("a",), backbone=None, inputs=(image_input(8, 16, (0,) * 3, (1,) * 3), tokens))
    image, ids = meta.example_inputs(batch=3)
    assert image.shape == (3, 3, 8, 16) and image.dtype == torch.float32
    assert ids.shape == (3, 8) and ids.dtype == torch.int64 and 0 <= int(ids.min()) and int(ids.max()) < 7
    assert tokens.dynamic_axes == {0: "batch", 1: "length"}
    assert tokens.example(2, {"length": 5}).shape == (2, 5)


def test_image_of_a_model_without_an_image_input_is_a_clear_error():
    meta = ModelMeta(task="t", classes=(), backbone=None, inputs=(tensor_input(("length",), name="tokens", dtype="int64"),))
    with pytest.raises(ModelError, match="takes no image input"):
        meta.image


def test_unknown_version_and_malformed_metadata_are_model_errors():
    good = ModelMeta(task="t", classes=(), backbone=None, inputs=(tensor_input((4,)),)).to_dict()
    with pytest.raises(ModelError, match="metadata version 99.*upgrade transferkit"):
        ModelMeta.from_dict({**good, "version": 99}, "m.ckpt")
    with pytest.raises(ModelError, match="m.ckpt: its transferkit metadata is malformed"):
        ModelMeta.from_dict({k: v for k, v in good.items() if k != "inputs"}, "m.ckpt")
    with pytest.raises(ModelError, match="dtype 'complex'"):
        InputSpec("x", "complex", ("batch",))


# -- files written by the previous release ---------------------------------------------------------

def test_v1_classification_checkpoint_reads_as_typed_meta():
    meta, state = read_checkpoint(V1 / "classification_v1.ckpt", task="classification")
    assert meta.task == "classification" and meta.classes == tuple(str(i) for i in range(10))
    assert meta.backbone == "timm:test_resnet" and meta.arch == {"dropout": 0.2}
    (image,) = meta.inputs
    assert (image.name, image.dtype, image.shape) == ("input", "float32", ("batch", 3, 32, 32))
    assert meta.image.mean == (0.5, 0.5, 0.5) and meta.pruned_shapes is None
    net = get_task("classification").load_net(meta, state, V1 / "classification_v1.ckpt")  # strict: every tensor fits
    assert net.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_v1_pruned_checkpoint_keeps_its_layer_sizes_and_provenance():
    meta, state = read_checkpoint(V1 / "classification_pruned_v1.ckpt")
    assert meta.pruned_shapes["fc"] == {"type": "Linear", "in_features": 96, "out_features": 10}
    assert meta.history["pruned_from"] == "cls/best.ckpt" and meta.history["prune"]["threshold"] == 0.5
    net = get_task("classification").load_net(meta, state, V1 / "classification_pruned_v1.ckpt")
    assert net.fc.in_features == 96


def test_v1_yolo_metadata_keeps_the_anchors_as_architecture():
    meta = ModelMeta.from_dict(json.loads((V1 / "yolo_v4_tiny_v1_meta.json").read_text()))
    assert meta.arch["mid_anchor_shape"][0] == [10.0, 14.0] and meta.arch["activation"] == "leaky_relu"
    assert (meta.image.width, meta.image.height) == (64, 64)
    assert ModelMeta.from_dict(meta.to_dict()) == meta


def test_v1_checkpoints_work_with_every_verb_that_reads_a_model(digits_demo, kitti, tmp_path):
    digits32 = digits_demo(per_class=2, val_per_class=2, size=32)
    data = [f"data.train_dir={digits32 / 'train'}", f"data.val_dir={digits32 / 'val'}", "train.num_workers=0"]
    assert tkit("classification", "evaluate", "-r", tmp_path / "eval", "-m", V1 / "classification_v1.ckpt", *data) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["num_images"] == 20
    assert tkit("classification", "export", "-r", tmp_path / "export", "-m", V1 / "classification_pruned_v1.ckpt",
                *data) == 0
    exported = load_predictor(get_task("classification"), tmp_path / "export" / "model.onnx").meta
    assert exported.version == META_VERSION and exported.history["pruned_from"] == "cls/best.ckpt"
    dn = [*detection_data_args(kitti), "train.num_workers=0"]
    assert tkit("detectnet_v2", "evaluate", "-r", tmp_path / "dn", "-m", V1 / "detectnet_v2_v1.ckpt", *dn) == 0
    assert tkit("detectnet_v2", "evaluate", "-r", tmp_path / "dn_onnx", "-m", V1 / "detectnet_v2_v1.onnx", *dn) == 0
    eager = json.loads((tmp_path / "dn" / "metrics.json").read_text())
    onnx = json.loads((tmp_path / "dn_onnx" / "metrics.json").read_text())
    assert eager["num_images"] == onnx["num_images"] == 4 and onnx["model"]["runtime"] == "onnx"
