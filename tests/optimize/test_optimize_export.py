import json

import onnx
import onnx2torch
import pytest
import torch
import torchvision

from transferkit.errors import ModelError
from transferkit.engine.meta import tensor_input
from transferkit.optimize import OnnxModel, check_parity, export_onnx, export_tensorrt, verify_export

SIZE = 32


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


@pytest.fixture(scope="module")
def exported(resnet, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    metadata = {"class_names": json.dumps(["cat", "dog"]), "mean": [0.485, 0.456, 0.406], "task": "classification"}
    return export_onnx(resnet, path, tensor_input((3, SIZE, SIZE)), metadata=metadata)


def test_export_is_a_valid_onnx_file_with_dynamic_batch(exported):
    proto = onnx.load(str(exported))
    onnx.checker.check_model(proto)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    assert [d.dim_value for d in dims[1:]] == [3, SIZE, SIZE]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert not list(exported.parent.glob(".*.tmp"))  # the atomic write left no temp file


@pytest.mark.parametrize("batch", [1, 3])
def test_export_matches_pytorch_for_any_batch_size(resnet, exported, batch):
    result = verify_export(resnet, exported, torch.randn(batch, 3, SIZE, SIZE))
    assert result["ok"] and result["max_abs_diff"] < 1e-4 and result["batch"] == batch


def test_metadata_is_read_back(exported):
    metadata = OnnxModel(exported).metadata
    assert json.loads(metadata["class_names"]) == ["cat", "dog"]
    assert json.loads(metadata["mean"]) == [0.485, 0.456, 0.406]
    assert metadata["task"] == "classification"


def test_export_reimports_with_onnx2torch(resnet, exported):
    reimported = onnx2torch.convert(str(exported)).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(reimported(x), resnet(x), atol=1e-4)


def test_mobilenet_export_matches(tmp_path):
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=5).eval()
    path = export_onnx(model, tmp_path / "mb.onnx", tensor_input((3, SIZE, SIZE)))
    assert verify_export(model, path, torch.randn(2, 3, SIZE, SIZE))["ok"]


def test_export_leaves_model_mode_unchanged(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()).train()
    export_onnx(model, tmp_path / "m.onnx", tensor_input((3, 8, 8)), output_names=("features",))
    assert model.training


def test_parity_failure_is_reported_with_difference_and_tolerance(resnet, exported):
    changed = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    result = check_parity(changed, exported, torch.randn(2, 3, SIZE, SIZE))
    assert not result["ok"] and result["max_abs_diff"] > 1e-4
    with pytest.raises(ModelError, match="atol=0.0001"):
        verify_export(changed, exported, torch.randn(2, 3, SIZE, SIZE))


def test_tensorrt_missing_says_how_to_install_and_what_still_works(exported, tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorrt is installed here")
    with pytest.raises(ModelError) as info:
        export_tensorrt(exported, tmp_path / "model.engine")
    message = str(info.value)
    assert "pip install tensorrt" in message and str(exported) in message and "ONNX Runtime" in message
    assert not (tmp_path / "model.engine").exists()
