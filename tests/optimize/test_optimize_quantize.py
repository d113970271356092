import os

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
import torch
import torchvision

from transferkit.errors import DataError
from transferkit.engine.meta import tensor_input
from transferkit.optimize import OnnxModel, export_onnx, file_size_bytes, quantize_int8

SIZE = 32


def smooth_images(n: int, seed: int) -> np.ndarray:
    """Random but image-like inputs: low-frequency colour blobs, normalised like ImageNet inputs."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    images = torch.nn.functional.interpolate(coarse, size=SIZE, mode="bilinear", align_corners=False)
    return ((images - 0.45) / 0.225).numpy()


@pytest.fixture(scope="module")
def fp32_and_int8(tmp_path_factory):
    folder = tmp_path_factory.mktemp("int8")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    fp32 = export_onnx(model, folder / "fp32.onnx", tensor_input((3, SIZE, SIZE)), metadata={"task": "classification"})
    int8 = quantize_int8(fp32, folder / "int8.onnx", (smooth_images(8, seed) for seed in range(4)))
    return fp32, int8


def test_int8_model_is_qdq_and_at_least_2_5x_smaller(fp32_and_int8):
    fp32, int8 = fp32_and_int8
    assert file_size_bytes(fp32) / file_size_bytes(int8) >= 2.5
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_int8_outputs_stay_close_to_fp32(fp32_and_int8):
    fp32, int8 = fp32_and_int8
    x = smooth_images(32, seed=99)
    a, b = OnnxModel(fp32)(x)[0], OnnxModel(int8)(x)[0]
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.9
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.8


def test_int8_model_keeps_metadata_and_dynamic_batch(fp32_and_int8):
    _, int8 = fp32_and_int8
    model = OnnxModel(int8)
    assert model.metadata["task"] == "classification"
    assert model.metadata["precision"] == "int8" and model.metadata["calibration_batches"] == "4"
    assert model(smooth_images(3, seed=5))[0].shape == (3, 10)


def test_quantization_leaves_no_files_behind(fp32_and_int8):
    fp32, _ = fp32_and_int8
    assert sorted(p.name for p in fp32.parent.iterdir()) == ["fp32.onnx", "int8.onnx"]
    assert not any(name.startswith("augmented_model") for name in os.listdir("."))


def test_no_calibration_batches_is_a_data_error(fp32_and_int8, tmp_path):
    fp32, _ = fp32_and_int8
    with pytest.raises(DataError, match="no batches"):
        quantize_int8(fp32, tmp_path / "x.onnx", [])
    assert not (tmp_path / "x.onnx").exists()


def test_calibration_batch_of_wrong_size_is_a_data_error(fp32_and_int8, tmp_path):
    fp32, _ = fp32_and_int8
    with pytest.raises(DataError, match=r"shape \[2, 3, 16, 16\].*\['N', 3, 32, 32\]"):
        quantize_int8(fp32, tmp_path / "x.onnx", [np.zeros((2, 3, 16, 16), np.float32)])


def zero_points(path) -> list[np.ndarray]:
    """The zero-point initialisers of every QuantizeLinear (activations) in the model."""
    graph = onnx.load(str(path)).graph
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    return [inits[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear" and n.input[2] in inits]


def test_cpu_target_uses_uint8_activations(fp32_and_int8):
    _, int8 = fp32_and_int8
    points = zero_points(int8)
    assert points and all(p.dtype == np.uint8 for p in points)  # U8S8: ONNX Runtime's fast x86 path
    assert OnnxModel(int8).metadata["int8_target"] == "cpu"


def test_tensorrt_target_is_symmetric_int8(fp32_and_int8, tmp_path):
    fp32, _ = fp32_and_int8
    trt = quantize_int8(fp32, tmp_path / "trt.onnx", (smooth_images(8, seed) for seed in range(2)), target="tensorrt")
    points = zero_points(trt)
    assert points and all(p.dtype == np.int8 and not p.any() for p in points)  # zero point 0: TensorRT's QDQ form
    x = smooth_images(16, seed=7)
    assert (OnnxModel(fp32)(x)[0].argmax(1) == OnnxModel(trt)(x)[0].argmax(1)).mean() >= 0.8
    assert OnnxModel(trt).metadata["int8_target"] == "tensorrt"


def test_unknown_int8_target_is_refused(fp32_and_int8, tmp_path):
    from transferkit.errors import ModelError

    fp32, _ = fp32_and_int8
    with pytest.raises(ModelError, match="cpu, tensorrt"):
        quantize_int8(fp32, tmp_path / "x.onnx", [smooth_images(2, 0)], target="gpu")


def float_weight_convs(path) -> list[str]:
    """Conv nodes whose weight is a plain float initialiser (not the output of a DequantizeLinear)."""
    graph = onnx.load(str(path)).graph
    inits = {i.name for i in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "Conv" and n.input[1] in inits]


def test_cpu_target_keeps_the_image_stem_conv_in_float(fp32_and_int8, tmp_path):
    fp32, int8 = fp32_and_int8
    kept = float_weight_convs(int8)
    assert len(kept) == 1  # resnet18's conv1, fed by the image: twice as slow in INT8 in ONNX Runtime
    graph = onnx.load(str(int8)).graph
    stem = next(n for n in graph.node if n.name == kept[0])
    assert stem.input[0] == graph.input[0].name  # it reads the image itself, no QuantizeLinear before it
    assert len([n for n in graph.node if n.op_type == "Conv"]) == 20  # the other 19 convs run on int8 weights
    assert OnnxModel(int8).metadata["float_nodes"] == f'["{kept[0]}"]'
    everything = quantize_int8(fp32, tmp_path / "all.onnx", [smooth_images(8, 0)], exclude_nodes=[])
    assert float_weight_convs(everything) == [] and "float_nodes" not in OnnxModel(everything).metadata


def test_tensorrt_target_quantises_the_stem_too(fp32_and_int8, tmp_path):
    fp32, _ = fp32_and_int8
    trt = quantize_int8(fp32, tmp_path / "trt.onnx", [smooth_images(8, 0)], target="tensorrt")
    assert float_weight_convs(trt) == []
