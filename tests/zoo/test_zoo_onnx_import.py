"""Bring your own model: each form of ONNX file onnx2torch cannot read as is, built here by hand."""
import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from transferkit.vision.backbones import build_backbone
from transferkit.errors import ModelError
from transferkit.zoo import get_entry, import_onnx, list_models
from transferkit.zoo import onnx_import, onnx_normalise

rng = np.random.default_rng(0)


def _tensor(name, *shape):
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name=name)


def _small_classifier(path, opset=13, weights="initializers", batchnorm=False, extra_ops=(), metadata=None):
    """image [N,3,16,16] -> Conv(stride 2) [-> BN] -> Relu [-> extra ops] -> GlobalAveragePool -> Flatten -> Gemm -> [N,5]"""
    params = [_tensor("conv.w", 8, 3, 3, 3), _tensor("conv.b", 8), _tensor("fc.w", 5, 8), _tensor("fc.b", 5)]
    if batchnorm:
        params += [_tensor("bn.scale", 8), _tensor("bn.bias", 8), _tensor("bn.mean", 8)]
        params.append(numpy_helper.from_array(rng.uniform(0.5, 2, 8).astype(np.float32), name="bn.var"))
    nodes = []
    if weights == "constants":
        nodes += [helper.make_node("Constant", [], [p.name], value=p, name=f"const_{p.name}") for p in params]
    nodes.append(helper.make_node("Conv", ["image", "conv.w", "conv.b"], ["conv"], name="conv", pads=[1, 1, 1, 1], strides=[2, 2]))
    last = "conv"
    if batchnorm:
        nodes.append(helper.make_node("BatchNormalization", ["conv", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["bn"], name="bn"))
        last = "bn"
    nodes.append(helper.make_node("Relu", [last], ["relu"], name="relu"))
    last = "relu"
    for index, op in enumerate(extra_ops):
        nodes.append(helper.make_node(op, [last], [f"extra{index}"], name=f"my_{op.lower()}"))
        last = f"extra{index}"
    nodes += [
        helper.make_node("GlobalAveragePool", [last], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
    ]
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 16, 16])]
    initializers = params if weights != "constants" else []
    if weights == "inputs":  # keep_initializers_as_inputs=True style
        inputs += [helper.make_tensor_value_info(p.name, TensorProto.FLOAT, list(p.dims)) for p in params]
    graph = helper.make_graph(nodes, "small", inputs,
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7 if opset < 15 else 8
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(model, str(path))
    return path


def _run_ort(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize(
    "form, note",
    [
        (dict(weights="constants"), "moved 4 Constant nodes into initializers"),
        (dict(weights="inputs"), "removed 4 initializers listed as graph inputs"),
        (dict(opset=8, batchnorm=True), "converted opset 8 -> 13"),
    ],
)
def test_each_unreadable_form_is_normalised_and_imported(tmp_path, form, note):
    entry, report = import_onnx("small", _small_classifier(tmp_path / "small.onnx", **form))
    assert note in report["normalisations"]
    assert report["features"] == "relu"  # cut before GlobalAveragePool, keeping the spatial map
    assert report["output_shape"] == [2, 8, 8, 8] and report["max_abs_diff"] < 1e-4
    assert (entry.family, entry.input_size, entry.meta["channels"], entry.meta["stride"]) == ("onnx", 16, 8, 2)


def test_opset_8_batchnorm_cannot_be_converted_without_the_upgrade(tmp_path):
    model = onnx.load(str(_small_classifier(tmp_path / "old.onnx", opset=8, batchnorm=True)))
    assert ("BatchNormalization", "bn") in onnx_normalise.unsupported_nodes(model)


def test_unsupported_operators_are_named_with_their_nodes(tmp_path, isolated_home):
    path = _small_classifier(tmp_path / "odd.onnx", extra_ops=("Hardmax", "Shrink"))
    with pytest.raises(ModelError) as err:
        import_onnx("odd", path)
    assert "Hardmax, Shrink" in str(err.value)
    assert "my_hardmax (Hardmax)" in str(err.value) and "my_shrink (Shrink)" in str(err.value)
    assert not (isolated_home / "onnx" / "odd" / "entry.json").exists()


def test_imported_model_is_registered_and_builds_a_backbone_matching_onnxruntime(tmp_path, isolated_home):
    source = _small_classifier(tmp_path / "small.onnx", metadata={"mean": [0.5], "std": [0.25], "class_names": list("abcde")})
    entry, _ = import_onnx("my_net", source)
    stored = isolated_home / "onnx" / "my_net"
    assert (stored / "model.onnx").is_file() and (stored / "entry.json").is_file()
    # The registry reads the folder, so a later process finds the model the same way.
    assert get_entry("my_net") == entry and entry in list_models()
    assert entry.mean == (0.5, 0.5, 0.5) and entry.std == (0.25, 0.25, 0.25) and entry.categories == tuple("abcde")

    backbone = build_backbone("my_net").eval()
    assert (backbone.channels, backbone.strides) == ([8], [2])
    x = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        ours = backbone.forward_features(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, _run_ort(stored / "model.onnx", x), atol=1e-5)


def test_a_later_process_builds_the_imported_backbone(tmp_path, isolated_home):
    import os
    import subprocess
    import sys

    import_onnx("later", _small_classifier(tmp_path / "small.onnx"))
    code = "from transferkit.vision.backbones import build_backbone; b = build_backbone('later'); print(b.channels, b.strides)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[8] [2]"


def test_features_node_picks_where_to_cut(tmp_path):
    entry, report = import_onnx("cut", _small_classifier(tmp_path / "s.onnx", batchnorm=True), features_node="bn")
    assert report["features"] == "bn" and report["output_shape"] == [2, 8, 8, 8]
    with pytest.raises(ModelError, match="Close names: relu"):
        import_onnx("cut2", tmp_path / "s.onnx", features_node="reluu")


def test_names_of_builtin_models_and_existing_imports_are_refused(tmp_path):
    path = _small_classifier(tmp_path / "s.onnx")
    with pytest.raises(ModelError, match="built-in"):
        import_onnx("resnet18", path)
    import_onnx("twice", path)
    with pytest.raises(ModelError, match="already imported"):
        import_onnx("twice", path)
    assert import_onnx("twice", path, overwrite=True)[0].name == "twice"


def test_a_conversion_that_disagrees_with_onnxruntime_is_refused(tmp_path, monkeypatch):
    real_convert = onnx_import.convert_onnx

    class OffByOne(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.promoted_buffers = 0

        def forward(self, x):
            return self.inner(x) + 1

    monkeypatch.setattr(onnx_import, "convert_onnx", lambda model: OffByOne(real_convert(model)))
    with pytest.raises(ModelError, match="disagrees with onnxruntime: max abs difference 1"):
        import_onnx("bad", _small_classifier(tmp_path / "s.onnx"))


def _mlp_classifier(path):
    """image [N,3,8,8] -> Flatten -> MatMul+Add -> Relu -> MatMul+Add -> Softmax: a head without a pool."""
    params = [_tensor("w1", 192, 16), _tensor("b1", 16), _tensor("w2", 16, 4), _tensor("b2", 4)]
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "w1"], ["mm1"], name="mm1"),
        helper.make_node("Add", ["mm1", "b1"], ["hidden"], name="add1"),
        helper.make_node("Relu", ["hidden"], ["features"], name="relu"),
        helper.make_node("MatMul", ["features", "w2"], ["mm2"], name="mm2"),
        helper.make_node("Add", ["mm2", "b2"], ["logits"], name="add2"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 4])], initializer=params)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


def test_a_head_without_pooling_leaves_a_vector_backbone_with_trainable_matmul_weights(tmp_path):
    entry, report = import_onnx("mlp", _mlp_classifier(tmp_path / "mlp.onnx"))
    assert report["features"] == "features" and report["output_shape"] == [1, 16]
    assert report["weights_made_trainable"] == 2  # w1 and b1 were buffers in onnx2torch's module
    backbone = build_backbone("mlp")
    assert backbone.channels == [16] and backbone.strides == [None]
    assert backbone.forward_features(torch.randn(1, 3, 8, 8)).shape == (1, 16)
    assert sum(p.numel() for p in backbone.parameters() if p.requires_grad) == 192 * 16 + 16


class _TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.body(x).mean(dim=(2, 3)))


def test_weights_shared_through_identity_nodes_become_initializers(tmp_path):
    """What the legacy exporter's constant folding does when two layers hold equal tensors."""
    net = _TinyNet().eval()
    # Freshly initialised BatchNorms fold into equal (zero) conv biases, which the exporter shares.
    net.body = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, 2, 1, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 1, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
    ).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.randn(1, 3, 16, 16), str(tmp_path / "shared.onnx"), dynamo=False)
    assert "Identity" in {n.op_type for n in onnx.load(str(tmp_path / "shared.onnx")).graph.node}
    _, report = import_onnx("shared", tmp_path / "shared.onnx")
    assert any("Identity nodes on weights" in note for note in report["normalisations"])


def test_dynamo_export_with_reducemean_18_is_lowered_and_imported(tmp_path):
    pytest.importorskip("onnxscript")
    net = _TinyNet().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(1, 3, 16, 16),), str(tmp_path / "dyn.onnx"), dynamo=True, verbose=False)
    entry, report = import_onnx("dyn", tmp_path / "dyn.onnx")
    assert any(note.startswith("converted opset") and note.endswith("-> 17") for note in report["normalisations"])
    assert "ReduceMean" in report["how"] and report["output_shape"] == [1, 8, 8, 8]


def test_real_mobilenet_v2_round_trips_through_onnx_and_trains(tmp_path, mobilenet_file):
    """The offline ImageNet MobileNetV2, exported the default legacy way (BatchNorm folded into the
    convolutions, ReLU6 bounds as Constant nodes), imports, matches our torch backbone, and fine-tunes."""
    import torchvision

    net = torchvision.models.mobilenet_v2()
    net.load_state_dict(torch.load(mobilenet_file, weights_only=True))
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.randn(1, 3, 64, 64), str(tmp_path / "mnv2.onnx"), dynamo=False,
                          input_names=["image"], dynamic_axes={"image": {0: "N"}})
    entry, report = import_onnx("mnv2_onnx", tmp_path / "mnv2.onnx")
    assert any("Constant nodes" in note for note in report["normalisations"])
    assert report["output_shape"] == [2, 1280, 2, 2] and report["max_abs_diff"] < 1e-3

    imported = build_backbone("mnv2_onnx").eval()
    reference = build_backbone("mobilenet_v2").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(imported.forward_features(x), reference.forward_features(x), atol=1e-4, rtol=1e-4)

    # A new head on the imported features trains end to end: gradients reach the imported weights.
    imported.train()
    head = torch.nn.Linear(imported.num_features, 3)
    params = [p for p in imported.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.SGD(params, lr=0.1)
    first_conv = next(m for m in imported.modules() if isinstance(m, torch.nn.Conv2d))
    before = first_conv.weight.detach().clone()
    logits = head(imported.forward_features(x).mean(dim=(2, 3)))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    optimizer.step()
    assert first_conv.weight.grad is not None and not torch.equal(before, first_conv.weight)
