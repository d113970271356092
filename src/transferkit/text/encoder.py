"""Pretrained transformer encoders: where one comes from (zoo name, local folder, hub name), loading it with a
new head, rebuilding it from the config a checkpoint carries, and TextNet, the network every text task trains.

`model.backbone` may be
  - a zoo name (`tkit model list`, family "huggingface"), e.g. the offline `minilm-l6`;
  - a local Hugging Face model folder (config.json, weights, tokenizer files);
  - a hub name (`org/name`), fetched by huggingface_hub where there is a network (with HF_HUB_OFFLINE or
    TRANSFERKIT_OFFLINE set only a copy already in the local Hugging Face cache is used).
"""
from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from ..engine.checkpoint import LoadReport
from ..errors import ModelError, first_line
from .tokenizer import read_tokenizer_json

log = logging.getLogger("transferkit")

HEADS = ("sequence", "token")
# Keys of a transformers config that describe labels or provenance, not the architecture: left out of the
# config a model's metadata carries (its labels are ModelMeta.classes).
_NOT_ARCHITECTURE = ("id2label", "label2id", "num_labels", "_name_or_path", "transformers_version", "architectures",
                     "finetuning_task", "problem_type", "_attn_implementation_autoset")
_HUB_FILES = ["config.json", "*.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json",
              "merges.txt", "special_tokens_map.json", "*.model", "pytorch_model.bin"]


@dataclass(frozen=True)
class Backbone:
    """A pretrained encoder found on disk: its name as the spec gave it, its folder, config and tokenizer."""

    name: str
    folder: Path
    config: dict[str, Any]
    tokenizer_json: str
    source: str  # zoo | folder | hub

    @property
    def max_positions(self) -> int | None:
        value = self.config.get("max_position_embeddings")
        if not isinstance(value, int):
            return None
        # RoBERTa-style models count positions from pad_token_id + 1: two of their rows are never a position.
        return value - 2 if self.config.get("model_type") in ("roberta", "xlm-roberta", "camembert") else value


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' load reports and progress bars off: transferkit writes its own load_report.json."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{path} cannot be read as JSON ({type(e).__name__}); copy the model folder again") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise ModelError(f"{path} names no model_type; it is not a transformers model config")
    return config


def _backbone_from_folder(name: str, folder: Path, source: str) -> Backbone:
    return Backbone(name, folder, _read_config(folder), read_tokenizer_json(folder), source)


def _hub_folder(name: str, key: str) -> Path:
    from ..zoo.sources import offline_reason

    reason = offline_reason()
    try:
        from huggingface_hub import snapshot_download

        with quiet_transformers():
            return Path(snapshot_download(name, allow_patterns=_HUB_FILES, local_files_only=bool(reason)))
    except Exception as e:  # the hub client raises many unrelated types for "not available"
        if reason:
            raise ModelError(
                f"{key}={name!r} is not a zoo model (tkit model list) nor a local folder, and as a Hugging Face hub "
                f"name it cannot be fetched: {reason} and the local Hugging Face cache has no copy; download the model "
                "folder where there is a network and pass its path as " + key) from None
        raise ModelError(f"{key}={name!r}: fetching it from the Hugging Face hub failed ({type(e).__name__}: "
                         f"{first_line(e)[:160]}); check the name, or pass a local model folder") from None


def find_backbone(name: str, key: str = "model.backbone") -> Backbone:
    """The encoder `name` names: a zoo name, a local model folder or a hub name (see the module docstring)."""
    from ..zoo import get_entry, resolve_model_folder

    if not name or not str(name).strip():
        raise ModelError(f"{key} is empty: give a zoo name such as minilm-l6, a model folder or a hub name")
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{key}: {path} is a folder without config.json; pass a Hugging Face model folder")
        return _backbone_from_folder(name, path, "folder")
    if name.startswith(("/", "~", ".")) or os.sep in name.replace("/", "") or name.count("/") > 1:
        raise ModelError(f"{key}: folder {path} does not exist; pass an existing Hugging Face model folder or a zoo name")
    if "/" not in name:
        try:
            entry = get_entry(name)
        except ModelError as e:
            raise ModelError(f"{key}: {first_line(e)}") from None
        if entry.family != "huggingface" or entry.modality != "text":
            raise ModelError(f"{key}={name!r} is a {entry.modality} model of family {entry.family}; a text task "
                             "needs a text encoder such as minilm-l6")
        return _backbone_from_folder(name, resolve_model_folder(entry), "zoo")
    return _backbone_from_folder(name, _hub_folder(name, key), "hub")


def _auto_class(head: str):
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    if head not in HEADS:
        raise ModelError(f"unknown text head {head!r}; one of {', '.join(HEADS)}")
    return AutoModelForSequenceClassification if head == "sequence" else AutoModelForTokenClassification


def architecture_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A transformers config as JSON-able data without labels or provenance: what ModelMeta.arch['hf_config'] holds."""
    out = {k: v for k, v in dict(config).items() if k not in _NOT_ARCHITECTURE}
    return json.loads(json.dumps(out, default=str))


def _config(hf_config: Mapping[str, Any], num_labels: int, overrides: Mapping[str, Any] | None = None):
    from transformers import AutoConfig

    values = architecture_config(hf_config)
    values.update(overrides or {})
    model_type = values.pop("model_type", None)
    if not model_type:
        raise ModelError("the model's config names no model_type; retrain the model")
    try:
        return AutoConfig.for_model(model_type, num_labels=num_labels, **values)
    except (ValueError, TypeError, KeyError) as e:
        raise ModelError(f"transformers cannot build a {model_type!r} model config ({first_line(e)[:160]})") from None


def build_from_config(hf_config: Mapping[str, Any], head: str, num_labels: int,
                      overrides: Mapping[str, Any] | None = None) -> nn.Module:
    """A randomly initialised transformers model (encoder + `head` with num_labels outputs) of that architecture."""
    config = _config(hf_config, num_labels, overrides)
    try:
        with quiet_transformers():
            return _auto_class(head).from_config(config)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ModelError(f"cannot build a {config.model_type} {head} classifier from its config "
                         f"({type(e).__name__}: {first_line(e)[:160]})") from None


def load_pretrained(backbone: Backbone, head: str, num_labels: int,
                    overrides: Mapping[str, Any] | None = None) -> tuple[nn.Module, LoadReport]:
    """The encoder's pretrained weights with a new `head` of num_labels outputs, and what loaded (names as in
    TextNet's state_dict, `model.` first)."""
    config = _config(backbone.config, num_labels, overrides)
    try:
        with quiet_transformers():
            model, info = _auto_class(head).from_pretrained(str(backbone.folder), config=config,
                                                            output_loading_info=True)
    except OSError as e:
        raise ModelError(f"model.backbone={backbone.name!r}: {backbone.folder} has no weights transformers can load "
                         f"({first_line(e)[:160]}); use model.pretrained=false to start from random weights") from None
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"model.backbone={backbone.name!r}: its weights do not fit the model built from its config "
                         f"and model.config_overrides ({first_line(e)[:160]})") from None
    report = LoadReport(source=str(backbone.folder))
    missing = set(info.get("missing_keys") or ())
    mismatched = {str(k[0]) if isinstance(k, (tuple, list)) else str(k) for k in info.get("mismatched_keys") or ()}
    for name in model.state_dict():
        if name in missing:
            report.reinitialised[f"model.{name}"] = "new head" if not name.startswith(model.base_model_prefix) \
                else "not in the pretrained weights"
        elif name in mismatched:
            report.reinitialised[f"model.{name}"] = "shape differs from the pretrained weights"
        else:
            report.loaded.append(f"model.{name}")
    report.unused = sorted(str(k) for k in info.get("unexpected_keys") or ())
    return model, report


class TextNet(nn.Module):
    """(input_ids, attention_mask) -> logits: [N, C] for a "sequence" head, [N, L, C] for a "token" head.

    `model` is the transformers *ForSequenceClassification / *ForTokenClassification model; `backbone` (not a
    separate submodule, so the state_dict names each weight once) is its encoder, everything else is the head.
    Token type ids are all zeros for the models that take them."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self._token_types = "token_type_ids" in inspect.signature(model.forward).parameters \
            and int(getattr(model.config, "type_vocab_size", 0) or 0) > 0

    @property
    def backbone(self) -> nn.Module:
        return self.model.base_model

    def output_layer(self) -> tuple[str, nn.Linear]:
        """(name in the state_dict without its parameter suffix, layer) of the head's last Linear: its rows are
        the labels (BERT: model.classifier; RoBERTa: model.classifier.out_proj)."""
        prefix = self.model.base_model_prefix
        found = None
        for name, module in self.model.named_modules():
            if isinstance(module, nn.Linear) and not name.startswith(prefix):
                found = (f"model.{name}", module)
        if found is None:
            raise ModelError(f"{type(self.model).__name__} has no linear output layer outside its encoder")
        return found

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        extra = {"token_type_ids": torch.zeros_like(input_ids)} if self._token_types else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **extra).logits
