"""What INT8 keeps in float: operator types, convolution kinds and node names (`exclude`), and the auto mode that
keeps the kinds INT8 makes slower (its decision read from profiles, never from timings taken in a test)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from transferkit.engine.meta import tensor_input
from transferkit.errors import SpecError
from transferkit.optimize import OnnxModel, export_onnx, quantize_int8
from transferkit.optimize import quantize as quantize_module
from transferkit.optimize.quantize import int8_losers, quantize_int8_auto
from transferkit.spec import ExportConfig

SIZE = 16


class DeconvHead(nn.Module):
    """A pose-network in miniature: a conv stem, a depthwise and a 1x1 conv, a transposed conv, a 1x1 output."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.BatchNorm2d(8), nn.ReLU6())
        self.pw = nn.Sequential(nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16), nn.ReLU6())
        self.up = nn.Sequential(nn.ConvTranspose2d(16, 8, 4, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.final = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.final(self.up(self.pw(self.dw(self.stem(x)))))


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, SIZE, SIZE)).astype(np.float32)


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    torch.manual_seed(0)
    return export_onnx(DeconvHead().eval(), tmp_path_factory.mktemp("int8x") / "fp32.onnx",
                       tensor_input((3, SIZE, SIZE)), output_names=("heatmaps",))


def quantised_around(path, op_type: str) -> list[bool]:
    """Per node of `op_type`: whether its weights come from a DequantizeLinear (int8 weights) or an output feeds a
    QuantizeLinear. (Its data input may be the DequantizeLinear of the INT8 node before it: that pair belongs to
    the node before, whose output is quantised either way.)"""
    graph = onnx.load(str(path)).graph
    made_by = {out: n.op_type for n in graph.node for out in n.output}
    read_by: dict[str, list[str]] = {}
    for n in graph.node:
        for name in n.input:
            read_by.setdefault(name, []).append(n.op_type)
    return [any(made_by.get(i) == "DequantizeLinear" for i in n.input[1:])
            or any("QuantizeLinear" in read_by.get(o, []) for o in n.output)
            for n in graph.node if n.op_type == op_type]


def depthwise_weight_is_float(path) -> bool:
    graph = onnx.load(str(path)).graph
    inits = {t.name for t in graph.initializer}
    return any(n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute) and n.input[1] in inits
               for n in graph.node)


def test_an_excluded_operator_type_has_no_qdq_around_it(fp32, tmp_path):
    everything = quantize_int8(fp32, tmp_path / "all.onnx", [images(4, 0)])
    assert quantised_around(everything, "ConvTranspose") == [True]  # what the exclusion takes away
    kept = quantize_int8(fp32, tmp_path / "kept.onnx", [images(4, 0)], exclude=["ConvTranspose"])
    assert quantised_around(kept, "ConvTranspose") == [False]
    assert any(quantised_around(kept, "Conv"))  # the convolutions are still INT8
    float_nodes = json.loads(OnnxModel(kept).metadata["float_nodes"])
    assert any("ConvTranspose" in name for name in float_nodes)
    assert OnnxModel(kept)(images(2, 1))[0].shape == (2, 4, SIZE, SIZE)


def test_a_convolution_kind_and_a_node_name_can_be_kept_in_float(fp32, tmp_path):
    assert not depthwise_weight_is_float(quantize_int8(fp32, tmp_path / "a.onnx", [images(4, 0)]))
    by_kind = quantize_int8(fp32, tmp_path / "b.onnx", [images(4, 0)], exclude=["conv depthwise"])
    assert depthwise_weight_is_float(by_kind)
    name = next(n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "ConvTranspose")
    by_name = quantize_int8(fp32, tmp_path / "c.onnx", [images(4, 0)], exclude=[name])
    assert quantised_around(by_name, "ConvTranspose") == [False]


def test_an_unknown_operator_type_is_a_one_line_spec_error_naming_the_key(fp32, tmp_path):
    with pytest.raises(SpecError) as info:
        quantize_int8(fp32, tmp_path / "x.onnx", [images(4, 0)], exclude=["ConvTransposed"])
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert "export.int8_exclude" in message and "'ConvTransposed'" in message and "ConvTranspose," in message
    assert not (tmp_path / "x.onnx").exists()


def test_the_spec_refuses_exclusions_the_target_cannot_use():
    with pytest.raises(Exception, match="int8_target=cpu"):
        ExportConfig(int8_target="tensorrt", int8_auto_exclude=True)
    with pytest.raises(Exception, match="not dynamic"):
        ExportConfig(int8_target="dynamic", int8_exclude=["Conv"])
    assert ExportConfig(int8_exclude=["ConvTranspose", "conv depthwise"]).int8_exclude == ["ConvTranspose",
                                                                                              "conv depthwise"]


def profile(**ms: float) -> dict[str, dict[str, float]]:
    return {kind.replace("_", " "): {"ms": value, "nodes": 1} for kind, value in ms.items()}


def test_losers_are_the_kinds_int8_runs_slower_largest_loss_first():
    fp32 = {**profile(conv_1x1=2.0, conv_depthwise=0.50, conv_stem=0.1), "ConvTranspose": {"ms": 3.0, "nodes": 3},
            "Gemm": {"ms": 0.2, "nodes": 1}}
    int8 = {**profile(conv_1x1=1.0, conv_depthwise=0.56, conv_stem=0.1), "ConvTranspose": {"ms": 4.5, "nodes": 3},
            "QGemm": {"ms": 0.3, "nodes": 1}, "DequantizeLinear": {"ms": 1.2, "nodes": 10},
            "QLinearAdd": {"ms": 0.1, "nodes": 10}}
    assert int8_losers(fp32, int8) == ["ConvTranspose", "Gemm", "conv depthwise"]  # QGemm is Gemm's INT8 kernel
    assert int8_losers(fp32, int8, margin=0.2) == ["ConvTranspose", "Gemm"]  # depthwise: 12% slower
    assert int8_losers(fp32, fp32) == []


def test_auto_mode_keeps_a_losing_kind_in_float_only_when_the_model_gets_faster(fp32, tmp_path, monkeypatch):
    """Fake profiles: INT8 loses on ConvTranspose (keeping it in float helps) and on depthwise convolutions
    (keeping them in float costs more in Q/DQ than it saves); ONNX Runtime's own layout nodes, slower too, name
    nothing that could be kept in float."""
    def fake_profile(path, inputs, runs=100, threads=1):
        meta = OnnxModel(path).metadata
        if meta.get("precision") != "int8":
            return {**profile(conv_1x1=2.0, conv_depthwise=0.5), "ConvTranspose": {"ms": 3.0, "nodes": 1},
                    "ReorderOutput": {"ms": 0.01, "nodes": 1}}
        floats = " ".join(json.loads(meta.get("float_nodes", "[]")))
        rows = {**profile(conv_1x1=1.0, conv_depthwise=0.6), "ReorderOutput": {"ms": 0.03, "nodes": 1}}
        rows["ConvTranspose"] = {"ms": 3.0 if "ConvTranspose" in floats else 4.5, "nodes": 1}
        rows["QuantizeLinear"] = {"ms": 0.4 if depthwise_weight_is_float(path) else 0.05, "nodes": 2}
        return rows

    monkeypatch.setattr("transferkit.optimize.profile.onnx_op_profile", fake_profile)
    calibration = [images(4, 0)]
    path, decision = quantize_int8_auto(fp32, tmp_path / "auto.onnx", calibration, images(1, 3))
    assert decision["slower_in_int8"] == ["ConvTranspose", "conv depthwise"]
    assert decision["kept_in_float"] == ["ConvTranspose"]
    assert [t["float"] for t in decision["tries"]] == [[], ["ConvTranspose"], ["ConvTranspose", "conv depthwise"]]
    assert decision["faster_than_fp32"] and decision["int8_ms"] < decision["fp32_ms"]
    assert quantised_around(path, "ConvTranspose") == [False] and not depthwise_weight_is_float(path)
    assert json.loads(OnnxModel(path).metadata["int8_auto"])["kept_in_float"] == ["ConvTranspose"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auto.onnx"]


def test_auto_mode_needs_the_cpu_target(fp32, tmp_path):
    from transferkit.errors import ModelError

    with pytest.raises(ModelError, match="int8_target cpu"):
        quantize_int8_auto(fp32, tmp_path / "x.onnx", [images(4, 0)], images(1, 0), target="tensorrt")


def test_the_cpu_target_still_keeps_only_the_stem_in_float_by_default(fp32, tmp_path):
    int8 = quantize_int8(fp32, tmp_path / "d.onnx", [images(4, 0)])
    assert quantize_module.TARGET_FLOAT["cpu"] == ("conv stem",)
    graph = onnx.load(str(int8)).graph
    inits = {t.name for t in graph.initializer}
    float_convs = [n for n in graph.node if n.op_type == "Conv" and n.input[1] in inits]
    assert len(float_convs) == 1 and float_convs[0].input[0] == graph.input[0].name
