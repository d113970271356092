import numpy as np
import torch
import torchvision

from transferkit.engine.meta import tensor_input
from transferkit.optimize import (OnnxModel, PruneConfig, count_macs, count_params, export_onnx, file_size_bytes,
                                  measure_latency_ms, prune_model)


def test_params_and_macs_of_a_known_layer():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_params(conv) == 8 * 3 * 3 * 3
    assert count_macs(conv, torch.randn(1, 3, 10, 10)) == 8 * 3 * 3 * 3 * 10 * 10


def test_pruning_reduces_params_and_macs():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    params, macs = count_params(model), count_macs(model, x)
    prune_model(model, x, PruneConfig(ratio=0.5), ignored_layers=[model.fc])
    assert count_params(model) < params / 2
    assert count_macs(model, x) < macs / 2


def test_latency_of_eager_model_and_onnx_session(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()).eval()
    x = torch.randn(2, 3, 16, 16)
    assert measure_latency_ms(model, x, warmup=1, runs=3) > 0
    path = export_onnx(model, tmp_path / "m.onnx", tensor_input((3, 16, 16)))
    assert measure_latency_ms(OnnxModel(path), x.numpy(), warmup=1, runs=3) > 0
    assert file_size_bytes(path) == path.stat().st_size > 0


def test_onnx_op_profile_splits_convolutions_by_kind(tmp_path):
    from transferkit.optimize import onnx_op_profile

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU6(),  # stem
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.ReLU6(),  # depthwise
        torch.nn.Conv2d(8, 16, 1),  # pointwise
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 4)).eval()
    path = export_onnx(model, tmp_path / "m.onnx", tensor_input((3, 16, 16)))
    profile = onnx_op_profile(path, np.zeros((1, 3, 16, 16), np.float32), runs=3)
    assert {"conv stem", "conv depthwise", "conv 1x1"} <= set(profile)
    assert all(profile[k]["nodes"] == 1 for k in ("conv stem", "conv depthwise", "conv 1x1"))
    assert "BatchNormalization" not in profile  # ONNX Runtime folded it into the stem conv when loading
    assert all(row["ms"] >= 0 for row in profile.values())
