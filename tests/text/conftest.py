"""Fixtures of the text tests: templated ticket files and a tiny random BERT (MiniLM's tokenizer and config with
one narrow layer, no pretrained weights) that trains in seconds."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from text_tickets import tickets, write_tsv


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module: a tiny BERT's tensors, and even MiniLM's, run faster so on a shared
    2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ticket_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tickets")
    return {"train": write_tsv(root / "train.tsv", tickets(48, seed=0)),
            "val": write_tsv(root / "val.tsv", tickets(24, seed=1), header=True)}


@pytest.fixture(scope="session")
def minilm_folder() -> Path:
    from transferkit.zoo import resolve_model_folder

    return resolve_model_folder("minilm-l6")


@pytest.fixture(scope="session")
def tiny_bert_folder(tmp_path_factory, minilm_folder) -> Path:
    """A local Hugging Face folder: a tiny random BERT (config + safetensors weights) with MiniLM's tokenizer."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    shutil.copy(minilm_folder / "tokenizer.json", folder / "tokenizer.json")
    return folder
