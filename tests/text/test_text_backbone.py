"""model.backbone: a zoo name, a local Hugging Face folder or a hub name; offline, a hub name that is not cached
is one clear error saying what to do."""
from __future__ import annotations

import json
import shutil

import pytest

from transferkit.cli import main
from transferkit.engine.checkpoint import read_checkpoint
from transferkit.errors import ModelError
from transferkit.text.encoder import find_backbone, load_pretrained
from transferkit.text.tokenizer import TextTokenizer, read_tokenizer_json, tokenizer_lowercases

TASK = "text_classification"


def test_an_uncached_hub_name_offline_is_one_line_saying_what_to_do(monkeypatch, ticket_files, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # an empty local Hugging Face cache
    with pytest.raises(ModelError) as offline:
        find_backbone("someorg/no-such-model")
    message = str(offline.value)
    assert "\n" not in message and "HF_HUB_OFFLINE" in message and "model.backbone" in message
    assert "download" in message and "folder" in message
    assert main([TASK, "train", "-r", str(tmp_path / "run"), f"data.train_file={ticket_files['train']}",
                 "model.backbone=someorg/no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "someorg/no-such-model" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("name,expected", [("./nowhere/model", "does not exist"), ("mobilenet_v2", "text encoder"),
                                           ("minilm-l7", "minilm-l6"), ("", "empty")])
def test_other_bad_backbones_are_named(name, expected):
    with pytest.raises(ModelError, match=expected) as refused:
        find_backbone(name)
    assert "\n" not in str(refused.value)


def test_a_local_folder_is_a_backbone_with_its_weights_and_tokenizer(tiny_bert_folder, ticket_files, tmp_path):
    backbone = find_backbone(str(tiny_bert_folder))
    assert backbone.source == "folder" and backbone.max_positions == 64
    model, report = load_pretrained(backbone, "sequence", 3)
    assert set(report.reinitialised) == {"model.classifier.weight", "model.classifier.bias"}
    assert all(v == "new head" for v in report.reinitialised.values()) and len(report.loaded) > 10
    args = [TASK, "train", "-r", str(tmp_path / "run"), f"data.train_file={ticket_files['train']}",
            f"data.val_file={ticket_files['val']}", f"model.backbone={tiny_bert_folder}", "train.epochs=1",
            "train.histograms=false", "model.max_length=64"]
    assert main(args) == 0
    meta, _ = read_checkpoint(tmp_path / "run" / "best.ckpt", task=TASK)
    assert meta.backbone == str(tiny_bert_folder) and meta.arch["hf_config"]["max_position_embeddings"] == 64
    report = json.loads((tmp_path / "run" / "load_report.json").read_text())
    assert report["counts"]["reinitialised"] == 2


def test_max_length_beyond_the_positions_a_model_has_is_refused(tiny_bert_folder, ticket_files, tmp_path, capsys):
    assert main([TASK, "train", "-r", str(tmp_path / "run"), f"data.train_file={ticket_files['train']}",
                 f"model.backbone={tiny_bert_folder}", "model.max_length=128"]) == 2
    err = capsys.readouterr().err
    assert "model.max_length=128" in err and "64 positions" in err and len(err.strip().splitlines()) == 1


def test_a_folder_without_tokenizer_json_gets_one_from_its_vocabulary(minilm_folder, tmp_path):
    folder = tmp_path / "old_style"
    folder.mkdir()
    for name in ("config.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_folder / name, folder / name)
    converted = TextTokenizer(read_tokenizer_json(folder), 32)
    original = TextTokenizer(read_tokenizer_json(minilm_folder), 32)
    texts = ["The Parcel never arrived!", "unbelievably long words tokenize into pieces"]
    assert [e.ids for e in converted.encode(texts)] == [e.ids for e in original.encode(texts)]


def test_the_tokenizer_truncates_lowercases_and_keeps_offsets(minilm_folder):
    text = read_tokenizer_json(minilm_folder)
    assert tokenizer_lowercases(text)
    tokenizer = TextTokenizer(text, 8)
    long, short = tokenizer.encode(["one two three four five six seven eight nine ten", "New York"])
    assert len(long.ids) == 8 and long.tokens[0] == "[CLS]" and long.tokens[-1] == "[SEP]"
    assert short.tokens == ["[CLS]", "new", "york", "[SEP]"] and short.offsets[2] == (4, 8)
    words = tokenizer.encode_words([["Unbelievably", "good"]])[0]
    assert words.word_ids[0] is None and words.word_ids[1] == 0 and words.word_ids[-2] == 1
    assert tokenizer.pad_id == 0 and tokenizer.special_token_count() == 2
