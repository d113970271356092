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
pytestmark = pytest.mark.export


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


class Affine(torch.nn.Module):
    def __init__(self, net: torch.nn.Module, scale: float, shift: float = 0.0):
        super().__init__()
        self.net, self.scale, self.shift = net, scale, shift

    def forward(self, x):
        return self.net(x) * self.scale + self.shift


@pytest.mark.parametrize("scale, within, beyond", [(1.0, 5e-5, 5e-4),  # order 1: atol is absolute
                                                   (1e4, 0.2, 2.0)])  # order 1e4: atol is relative
def test_the_tolerance_is_relative_to_the_outputs_scale_beyond_one(tmp_path, scale, within, beyond):
    """Float32 rounding grows with the values summed (and differs with the CPU's kernels): 1e-4 of a logit
    of 1e4 is 1 unit, as 1e-4 of a logit of 1 is 1e-4. A shift the ONNX file lacks stands for the error."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    path = export_onnx(Affine(net, scale).eval(), tmp_path / "m.onnx", tensor_input((3, SIZE, SIZE)))
    with torch.no_grad():
        largest = float(Affine(net, scale)(x).abs().max())
    assert 0.2 * scale < largest < 5 * scale  # the untrained resnet's logits are of order 1
    for shift, ok in ((within, True), (beyond, False)):
        result = check_parity(Affine(net, scale, shift).eval(), path, x, rtol=0)
        assert result["ok"] is ok and result["max_abs_diff"] == pytest.approx(shift, abs=1e-5 * scale)


def test_nan_outputs_and_other_shapes_fail(resnet, exported):
    x = torch.randn(2, 3, SIZE, SIZE)
    with pytest.raises(ModelError, match="nan"):
        verify_export(Affine(resnet, float("nan")).eval(), exported, x)
    wider = torch.nn.Sequential(resnet, torch.nn.Linear(10, 12)).eval()
    with pytest.raises(ModelError, match=r"output logits has shape \(2, 10\) but the model returns \(2, 12\)"):
        check_parity(wider, exported, x)


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
