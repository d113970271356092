"""The exported text model takes int64 input_ids / attention_mask of any batch and length and reproduces PyTorch on
real, padded sentences; INT8 (dynamic) quantises the encoder's matrix products and stays close."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from transferkit.optimize import OnnxModel, export_onnx, quantize_int8
from transferkit.tasks import get_task
from transferkit.text.data import TextCollate, TextExample
from transferkit.text.encoder import TextNet, find_backbone, load_pretrained
from transferkit.text.task import text_inputs
from transferkit.text.tokenizer import TextTokenizer

SENTENCES = ["hi", "The parcel with my laptop was delivered to the wrong address last Tuesday",
             "Why is my invoice higher than last time?", "crash", "Ünïcode wörds and emoji 🙂 are tokenized too, "
             "even when the sentence is much longer than the others in its batch and gets truncated at max_length"]


@pytest.fixture(scope="module")
def minilm():
    backbone = find_backbone("minilm-l6")
    model, _ = load_pretrained(backbone, "sequence", 4)
    return TextNet(model).eval(), TextTokenizer(backbone.tokenizer_json, 24)


def batch(tokenizer: TextTokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    examples = [TextExample(str(i), tuple(e.ids), 0) for i, e in enumerate(tokenizer.encode(texts))]
    ids, mask, _, _ = TextCollate(tokenizer.pad_id, "class")(examples)
    return ids, mask


@pytest.mark.export
def test_minilm_export_matches_pytorch_on_real_sentences_of_any_batch_and_length(minilm, tmp_path):
    net, tokenizer = minilm
    graph = get_task("text_classification").export_graph(net, None, None).module  # what `export` writes
    path = export_onnx(graph, tmp_path / "model.onnx", text_inputs("minilm-l6", 24, False, 30522), {"k": "v"})
    graph = onnx.load(path).graph
    assert [i.type.tensor_type.elem_type for i in graph.input] == [onnx.TensorProto.INT64] * 2
    session = OnnxModel(path)
    for texts in (SENTENCES, SENTENCES[:1], SENTENCES[1:3]):
        ids, mask = batch(tokenizer, texts)
        assert ids.dtype == torch.int64 and ids.shape[1] <= 24
        with torch.inference_mode():
            expected = net(ids, mask).numpy()
        got = session(ids.numpy(), mask.numpy())[0]
        assert np.abs(got - expected).max() < 1e-4, texts
    # padding does not change a sentence's logits (the mask is honoured in the graph)
    ids, mask = batch(tokenizer, SENTENCES)
    alone_ids, alone_mask = batch(tokenizer, SENTENCES[:1])
    padded = session(ids.numpy(), mask.numpy())[0][0]
    assert np.abs(padded - session(alone_ids.numpy(), alone_mask.numpy())[0][0]).max() < 1e-4

    int8 = quantize_int8(path, tmp_path / "int8.onnx", [], target="dynamic")
    # the encoder's MatMuls read their weights directly, so dynamic INT8 quantises them all
    matmuls = [n for n in onnx.load(int8).graph.node if n.op_type == "MatMul"]
    assert not matmuls or len(matmuls) <= 12  # left in float: only attention's activation x activation products
    assert int8.stat().st_size < 0.75 * path.stat().st_size
    quantised = OnnxModel(int8)(ids.numpy(), mask.numpy())[0]
    full = session(ids.numpy(), mask.numpy())[0]
    assert np.abs(quantised - full).max() < 0.1 * max(1.0, np.abs(full).max())


def test_text_models_declare_int64_inputs_with_their_tokenizer(tmp_path):
    task = get_task("text_classification")
    assert task.fixed_input_shape is False and task.item_kind == "sentences"
    inputs = text_inputs("minilm-l6", 64, True, 30522)
    assert [(i.name, i.dtype, i.shape, i.value_range) for i in inputs] == [
        ("input_ids", "int64", ("batch", "length"), (0, 30522)), ("attention_mask", "int64", ("batch", "length"), (1, 2))]
    assert inputs[0].text.tokenizer == "minilm-l6" and inputs[0].text.max_length == 64 and inputs[0].text.lowercase
    assert json.dumps([i.dtype for i in inputs]) == '["int64", "int64"]'
