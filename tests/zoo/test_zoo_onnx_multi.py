"""Bring your own model for dense tasks: an ONNX network cut at several feature nodes (a multi-stride
encoder for a UNet), or kept whole with its last layer rebuilt for a new class count."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from transferkit.cli import main
from transferkit.errors import ModelError
from transferkit.vision.backbones import Backbone, build_backbone, build_onnx_segmenter
from transferkit.vision.backbones.onnx_backbone import OnnxGraphBackbone
from transferkit.zoo import get_entry, import_onnx
from transferkit.zoo.entry import PackagedFile
from transferkit.zoo.onnx_import import extract_outputs
from transferkit.zoo.onnx_normalise import normalise_onnx
from transferkit.zoo.sources import packaged_file

rng = np.random.default_rng(0)


def _init(name, *shape):
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name=name)


def _conv(name, x, out, cin, cout, k=3, s=2, inits=None, bias=True):
    inits.append(_init(f"{name}.w", cout, cin, k, k))
    inputs = [x, f"{name}.w"]
    if bias:
        inits.append(_init(f"{name}.b", cout))
        inputs.append(f"{name}.b")
    return helper.make_node("Conv", inputs, [out], name=name, pads=[k // 2] * 4, strides=[s, s])


def _save(path, nodes, inits, output, out_shape, side=32):
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, side, side])
    result = helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)
    graph = helper.make_graph(nodes, "g", [image], [result], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _encoder(path, fpn=False):
    """image -> conv1/relu1 (stride 2, 4 ch) -> conv2/relu2 (4, 6) -> conv3/relu3 (8, 8) -> pool -> fc [N, 5].

    Node names differ from tensor names (relu2 outputs "r2"). With fpn, "p2" = 1x1(r2) + upsample(r3):
    a stride-4 map that needs the stride-8 one.
    """
    inits = []
    nodes = [_conv("conv1", "image", "c1", 3, 4, inits=inits), helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             _conv("conv2", "r1", "c2", 4, 6, inits=inits), helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             _conv("conv3", "r2", "c3", 6, 8, inits=inits), helper.make_node("Relu", ["c3"], ["r3"], name="relu3")]
    last = "r3"
    if fpn:
        inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), name="x2"))
        nodes += [_conv("lateral", "r2", "lat", 6, 8, k=1, s=1, inits=inits),
                  helper.make_node("Resize", ["r3", "", "x2"], ["up3"], name="up", mode="nearest",
                                   coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
                  helper.make_node("Add", ["lat", "up3"], ["p2"], name="merge"),
                  helper.make_node("ReduceMax", ["p2"], ["p2max"], name="p2max", axes=[2, 3], keepdims=1),
                  helper.make_node("Add", ["r3", "p2max"], ["r3b"], name="join")]
        last = "r3b"
    inits += [_init("fc.w", 5, 8), _init("fc.b", 5)]
    nodes += [helper.make_node("GlobalAveragePool", [last], ["pooled"], name="pool"),
              helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1)]
    return _save(path, nodes, inits, "logits", ["N", 5])


def _segnet(path):
    """image -> conv1/relu1 (stride 2, 8 ch) -> 1x1 "cls" conv to 3 classes -> + bias [1,3,1,1] -> linear
    Resize x2 -> Softmax: a small segmentation network with the usual tail after its last layer."""
    inits = [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), name="x2"), _init("cls.bias", 1, 3, 1, 1)]
    nodes = [_conv("conv1", "image", "c1", 3, 8, inits=inits), helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             _conv("cls", "r1", "scores", 8, 3, k=1, s=1, inits=inits, bias=False),
             helper.make_node("Add", ["scores", "cls.bias"], ["biased"], name="add_bias"),
             helper.make_node("Resize", ["biased", "", "x2"], ["up"], name="upsample", mode="linear"),
             helper.make_node("Softmax", ["up"], ["probs"], name="softmax", axis=1)]
    return _save(path, nodes, inits, "probs", ["N", 3, 32, 32])


def _ort(model_or_path, x, outputs=None):
    model = onnx.load(str(model_or_path)) if not isinstance(model_or_path, onnx.ModelProto) else model_or_path
    if outputs is not None:
        model = extract_outputs(model, outputs)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


# ---------------------------------------------------------------------------------------------
# Several feature nodes: a multi-stride encoder


def test_several_feature_nodes_make_an_encoder_with_one_map_per_node_in_stride_order(tmp_path, isolated_home):
    source = _encoder(tmp_path / "enc.onnx")
    entry, report = import_onnx("enc", source, features_node=["r3", "relu1", "r2"])  # tensor and node names, any order
    assert entry.meta["features"] == ["r1", "r2", "r3"] and entry.meta["feature_nodes"] == ["relu1", "r2", "r3"]
    assert (entry.meta["strides"], entry.meta["channels"]) == ([2, 4, 8], [4, 6, 8])
    assert report["output_shapes"] == [[2, 4, 16, 16], [2, 6, 8, 8], [2, 8, 4, 4]]
    assert len(report["max_abs_diffs"]) == 3 and max(report["max_abs_diffs"]) < 1e-4 and report["chained"]
    assert get_entry("enc").meta["strides"] == [2, 4, 8]  # recorded on disk for later processes

    backbone = build_backbone("enc").eval()
    assert (backbone.channels, backbone.strides, len(backbone.stages)) == ([4, 6, 8], [2, 4, 8], 3)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        maps = [m.numpy() for m in backbone(torch.from_numpy(x))]
    for ours, reference in zip(maps, _ort(source, x, ["r1", "r2", "r3"])):
        np.testing.assert_allclose(ours, reference, atol=1e-5)
    # Stage by stage: freezing the stem leaves the deeper stages trainable, out_stride drops the deep ones.
    backbone.freeze([0])
    assert not any(p.requires_grad for p in backbone.stages[0].parameters())
    assert all(p.requires_grad for p in backbone.stages[2].parameters())
    assert build_backbone("enc", out_stride=4).strides == [2, 4]


def test_maps_that_need_more_than_the_previous_map_come_from_one_graph(tmp_path):
    entry, report = import_onnx("fpn", _encoder(tmp_path / "fpn.onnx", fpn=True), features_node=["r3", "p2"])
    assert entry.meta["strides"] == [4, 8] and not report["chained"]
    backbone = build_backbone("fpn")
    assert isinstance(backbone, OnnxGraphBackbone) and backbone.channels == [8, 8]
    assert [tuple(m.shape) for m in backbone(torch.randn(1, 3, 32, 32))] == [(1, 8, 8, 8), (1, 8, 4, 4)]
    with pytest.raises(ModelError, match="cannot freeze single stages"):
        backbone.freeze([0])
    backbone.freeze([0, 1])
    assert not any(p.requires_grad for p in backbone.parameters())


@pytest.mark.parametrize(
    "nodes, message",
    [
        (["r1", "relu7"], r"features node 'relu7' is neither a node nor a tensor.*Close names: [a-z0-9, ]*relu1.*"
                          r"Maps where the stride changes: r1 \(stride 2, 4 ch\), r2 \(stride 4, 6 ch\)"),
        (["r2", "flat"], r"features node 'flat' outputs shape \[2, 8\], not a feature map \[N, C, H, W\]"),
        (["r2", "pooled"], r"'pooled' outputs a pooled \[2, 8, 1, 1\] tensor, not a feature map"),
        (["c2", "r2", "r3"], r"features nodes 'c2' \[2, 6, 8, 8\] and 'r2' \[2, 6, 8, 8\] both have stride 4"),
        (["r2", "relu2"], r"'r2' and 'relu2' are the same tensor"),
    ],
)
def test_bad_feature_nodes_are_one_line_errors_and_nothing_is_stored(tmp_path, isolated_home, nodes, message):
    with pytest.raises(ModelError, match=message) as err:
        import_onnx("bad", _encoder(tmp_path / "enc.onnx"), features_node=nodes)
    assert "\n" not in str(err.value)
    assert not (isolated_home / "onnx" / "bad").exists()


def test_one_node_in_a_list_is_the_classic_single_feature_import(tmp_path):
    entry, report = import_onnx("one", _encoder(tmp_path / "enc.onnx"), features_node=["relu2"])
    assert (entry.meta["features"], entry.meta["channels"], entry.meta["stride"]) == ("r2", 6, 4)
    assert build_backbone("one").strides == [4]


def test_cli_takes_comma_separated_features_and_model_info_shows_them(tmp_path, capsys):
    source = _encoder(tmp_path / "enc.onnx")
    assert main(["model", "import-onnx", "cli_enc", str(source), "--features", "relu1, r2,r3", "--mean", "0.5",
                 "--std", "0.2,0.3,0.4"]) == 0
    assert (get_entry("cli_enc").mean, get_entry("cli_enc").std) == ((0.5, 0.5, 0.5), (0.2, 0.3, 0.4))
    out = capsys.readouterr().out
    assert "tkit segmentation train" in out
    assert main(["model", "info", "cli_enc"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "feature maps: relu1 (stride 2, 4 ch), r2 (stride 4, 6 ch), r3 (stride 8, 8 ch)" in out
    assert main(["model", "import-onnx", "cli_bad", str(source), "--features", "r1,nope"]) == 2
    assert "features node 'nope' is neither a node nor a tensor" in capsys.readouterr().err
    assert main(["model", "import-onnx", "cli_bad", str(source), "--std", "0.5,0"]) == 2
    assert "std must be 1 or 3 numbers above 0, got [0.5, 0.0]" in capsys.readouterr().err
    assert main(["model", "import-onnx", "cli_bad", str(source), "--mean", "half"]) == 2
    assert "--mean 'half' must be one number or three" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# A whole segmentation network with its last layer replaced


def test_a_segmentation_network_is_rebuilt_with_its_own_head_matching_onnxruntime(tmp_path, isolated_home):
    source = _segnet(tmp_path / "seg.onnx")
    entry, report = import_onnx("segnet", source, head_node="auto")
    head = entry.meta["head"]
    assert (head["node"], head["op"], head["in_channels"], head["out_channels"]) == ("cls", "Conv", 8, 3)
    assert head["biases"] == ["cls.bias"] and head["activations"] == ["Softmax"] and head["logits"] == "up"
    assert head["upsample"]["mode"] == "bilinear" and not head["upsample"]["align_corners"]
    assert (entry.meta["features"], entry.meta["channels"], entry.meta["stride"]) == ("r1", 8, 2)
    assert report["head_output_shape"] == [2, 3, 16, 16] and report["max_abs_diff"] < 1e-4

    net = build_onnx_segmenter("segnet", 3).eval()
    assert net.head_init == "copied"
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        logits = net(torch.from_numpy(x)).numpy()
    # Same logits as the original graph before its Softmax (the bias, the 1x1 conv and the resize carried over).
    np.testing.assert_allclose(logits, _ort(source, x, ["up"])[0], atol=1e-5)
    # The body alone is an ordinary one-stage backbone.
    assert build_backbone("segnet").strides == [2]


def test_a_new_class_count_gets_a_new_last_layer_that_trains(tmp_path):
    import_onnx("segnet5", _segnet(tmp_path / "seg.onnx"), head_node="cls")
    net = build_onnx_segmenter("segnet5", 5)
    assert net.head_init == "random" and isinstance(net.backbone, Backbone)
    assert tuple(net(torch.randn(2, 3, 32, 32)).shape) == (2, 5, 32, 32)
    body = next(m for m in net.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    before = (body.weight.detach().clone(), net.head.weight.detach().clone())
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(net(torch.randn(2, 3, 32, 32)), torch.randint(0, 5, (2, 32, 32)))
    loss.backward()
    optimizer.step()
    assert not torch.equal(before[0], body.weight) and not torch.equal(before[1], net.head.weight)


def test_head_errors_name_the_layer_and_the_fix(tmp_path):
    source = _segnet(tmp_path / "seg.onnx")
    with pytest.raises(ModelError, match=r"head_node 'conv1' \(Conv\) is not the network's last layer: that is "
                                         r"Conv 'cls' \(followed by add_bias \(Add\), upsample \(Resize\), "
                                         r"softmax \(Softmax\)\)"):
        import_onnx("h1", source, head_node="conv1")
    with pytest.raises(ModelError, match=r"no replaceable last layer: the output 'logits' comes from Gemm 'fc'"):
        import_onnx("h2", _encoder(tmp_path / "enc.onnx"), head_node="auto")
    with pytest.raises(ModelError, match="do not go together"):
        import_onnx("h3", source, features_node=["r1"], head_node="auto")
    import_onnx("plain", source)
    with pytest.raises(ModelError, match="was not imported as a whole segmentation network; .*--head auto"):
        build_onnx_segmenter("plain", 2)


# ---------------------------------------------------------------------------------------------
# A real third-party network: PP-OCRv4's DBNet text detector (PPLCNetV3 encoder + FPN neck + DB head),
# shipped by rapidocr-onnxruntime. Paddle's exporter keeps its weights in Constant nodes.

PPOCR_DET = PackagedFile(distribution="rapidocr-onnxruntime", module="rapidocr_onnxruntime",
                         path="models/ch_PP-OCRv4_det_infer.onnx")
# The last map of the encoder at each stride (found from the output shapes: where the next block
# downsamples, and the encoder's outputs that feed the FPN neck's 1x1 convolutions).
PPOCR_ENCODER_NODES = ["p2o.Add.15", "p2o.Add.43", "p2o.Add.71", "p2o.Add.147", "p2o.Add.215"]


@pytest.fixture(scope="module")
def ppocr(tmp_path_factory):
    """The detector imported twice into one TRANSFERKIT_HOME: as an encoder, and whole with its head."""
    path = packaged_file(PPOCR_DET)
    if path is None:
        pytest.skip("rapidocr-onnxruntime is not installed (make install adds it)")
    home = tmp_path_factory.mktemp("ppocr_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRANSFERKIT_HOME", str(home))
        # rapidocr feeds this detector (pixels - 0.5) / 0.5; the file itself records no normalisation.
        encoder = import_onnx("ppocr_encoder", path, features_node=PPOCR_ENCODER_NODES, mean=[0.5], std=[0.5])
        whole = import_onnx("ppocr_db", path, head_node="auto", mean=[0.5], std=[0.5])
    return {"path": path, "home": home, "encoder": encoder, "whole": whole}


@pytest.fixture
def ppocr_home(ppocr, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_HOME", str(ppocr["home"]))
    return ppocr


def _image_batch(n=2, h=64, w=96):
    """Pixels in [0, 1] normalised with ImageNet's statistics, as a data pipeline would feed them."""
    pixels = np.random.default_rng(1).uniform(0, 1, (n, 3, h, w)).astype(np.float32)
    mean, std = np.array([0.485, 0.456, 0.406])[:, None, None], np.array([0.229, 0.224, 0.225])[:, None, None]
    return ((pixels - mean) / std).astype(np.float32)


def test_ppocr_detector_becomes_a_five_stride_encoder(ppocr_home):
    entry, report = ppocr_home["encoder"]
    assert any("Constant nodes into initializers" in note for note in report["normalisations"])
    assert entry.mean == entry.std == (0.5, 0.5, 0.5)
    assert entry.meta["strides"] == [2, 4, 8, 16, 32] and entry.meta["channels"] == [32, 48, 96, 192, 384]
    assert report["chained"] and max(report["max_abs_diffs"]) < 1e-3
    backbone = build_backbone("ppocr_encoder").eval()
    x = _image_batch()
    with torch.no_grad():
        maps = [m.numpy() for m in backbone(torch.from_numpy(x))]
    assert [m.shape for m in maps] == [(2, 32, 32, 48), (2, 48, 16, 24), (2, 96, 8, 12), (2, 192, 4, 6), (2, 384, 2, 3)]
    model, _ = normalise_onnx(onnx.load(str(ppocr_home["path"])))
    for ours, reference in zip(maps, _ort(model, x, PPOCR_ENCODER_NODES)):
        assert np.abs(ours - reference).max() <= 1e-4 + 1e-4 * np.abs(reference).max()

    # A decoder on the five maps trains the imported weights (one SGD step on a tiny batch).
    backbone.train()
    lateral = torch.nn.ModuleList(torch.nn.Conv2d(c, 2, 1) for c in backbone.channels)
    optimizer = torch.optim.SGD(list(backbone.parameters()) + list(lateral.parameters()), lr=0.01)
    before = [p.detach().clone() for p in backbone.stages[0].parameters()]
    images = torch.from_numpy(_image_batch(2, 64, 64))
    logits = sum(torch.nn.functional.interpolate(conv(m), size=(64, 64), mode="bilinear")
                 for conv, m in zip(lateral, backbone(images)))
    torch.nn.functional.cross_entropy(logits, torch.randint(0, 2, (2, 64, 64))).backward()
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, backbone.stages[0].parameters()))


def test_ppocr_detector_fine_tunes_whole_with_a_new_head(ppocr_home):
    entry, report = ppocr_home["whole"]
    head = entry.meta["head"]
    # DBNet's probability branch ends in a 2x2 stride-2 transposed conv to one channel, a bias Add, a Sigmoid.
    assert (head["op"], head["in_channels"], head["out_channels"]) == ("ConvTranspose", 24, 1)
    assert head["kernel_shape"] == [2, 2] and head["strides"] == [2, 2]
    assert head["activations"] == ["Sigmoid"] and head["upsample"] is None
    assert (entry.meta["channels"], entry.meta["stride"]) == (24, 2) and report["max_abs_diff"] < 1e-3

    x = _image_batch()
    model, _ = normalise_onnx(onnx.load(str(ppocr_home["path"])))
    reference = _ort(model, x, [head["logits"]])[0]  # the detector's logits before its Sigmoid
    same = build_onnx_segmenter("ppocr_db", 1).eval()
    with torch.no_grad():
        logits = same(torch.from_numpy(x)).numpy()
    assert same.head_init == "copied" and logits.shape == (2, 1, 64, 96)
    assert np.abs(logits - reference).max() <= 1e-4 * np.abs(reference).max() + 1e-4
    # Two classes (background, text): the new softmax head starts as the old sigmoid.
    binary = build_onnx_segmenter("ppocr_db", 2).eval()
    with torch.no_grad():
        text = torch.softmax(binary(torch.from_numpy(x)), 1)[:, 1].numpy()
    assert binary.head_init == "sigmoid as 2-class softmax"
    np.testing.assert_allclose(text, 1 / (1 + np.exp(-reference[:, 0])), atol=1e-4)

    net = build_onnx_segmenter("ppocr_db", 3)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    before = [p.detach().clone() for p in net.parameters()]
    images = torch.from_numpy(_image_batch(2, 64, 64))
    logits = net(images)
    assert tuple(logits.shape) == (2, 3, 64, 64)
    torch.nn.functional.cross_entropy(logits, torch.randint(0, 3, (2, 64, 64))).backward()
    optimizer.step()
    changed = [not torch.equal(b, p) for b, p in zip(before, net.parameters())]
    assert changed[-1] and sum(changed) > len(changed) // 2  # the new head and most of the body moved


def test_ppocr_model_info_lists_the_nodes(ppocr_home, capsys):
    assert main(["model", "info", "ppocr_encoder"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "p2o.Add.15 (stride 2, 32 ch)" in out and "p2o.Add.215 (stride 32, 384 ch)" in out
    assert main(["model", "info", "ppocr_db"]) == 0
    assert "replaceable head: ConvTranspose" in " ".join(capsys.readouterr().out.split())
    stored = json.loads((ppocr_home["home"] / "onnx" / "ppocr_db" / "report.json").read_text())
    assert stored["head"]["op"] == "ConvTranspose" and len(stored["max_abs_diffs"]) == 2
