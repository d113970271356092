import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from transferkit.errors import ModelError
from transferkit.engine.meta import tensor_input
from transferkit.optimize import OnnxModel, export_onnx


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(8, 4))
    path = tmp_path_factory.mktemp("rt") / "small.onnx"
    return export_onnx(model, path, tensor_input((3, 16, 16)), metadata={"task": "classification"})


def test_runs_a_batch_and_describes_its_input(small_onnx):
    model = OnnxModel(small_onnx, threads=1)
    assert model.input_name == "input"
    assert model.input_shape == (None, 3, 16, 16)
    outputs = model(np.random.rand(5, 3, 16, 16))  # float64 in is cast to float32
    assert len(outputs) == 1 and outputs[0].shape == (5, 4) and outputs[0].dtype == np.float32
    assert model.metadata == {"task": "classification"}
    assert "CPUExecutionProvider" in model.providers


def test_wrong_input_shape_is_a_model_error(small_onnx):
    with pytest.raises(ModelError, match=r"small.onnx rejected input 'input' of shape \(2, 3, 8, 8\) \(expects \[N, 3, 16, 16\]\)"):
        OnnxModel(small_onnx)(np.zeros((2, 3, 8, 8), np.float32))


def test_random_bytes_are_a_one_line_model_error(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(ModelError, match="garbage.onnx") as info:
        OnnxModel(path)
    assert "\n" not in str(info.value)


def test_truncated_file_is_a_model_error(small_onnx, tmp_path):
    path = tmp_path / "truncated.onnx"
    path.write_bytes(small_onnx.read_bytes()[:300])
    with pytest.raises(ModelError, match="truncated.onnx") as info:
        OnnxModel(path)
    assert "\n" not in str(info.value)


def test_missing_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        OnnxModel(tmp_path / "nope.onnx")


@pytest.mark.parametrize("domain, op", [("", "FancyPool"), ("com.acme", "Warp")])
def test_operator_onnx_runtime_cannot_run_is_named(tmp_path, domain, op):
    node = helper.make_node(op, ["input"], ["y"], domain=domain)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    path = tmp_path / "custom.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=opsets).SerializeToString())
    with pytest.raises(ModelError, match=f"custom.onnx uses operator .*{op}") as info:
        OnnxModel(path)
    assert "\n" not in str(info.value)
