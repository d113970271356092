"""Reading a state dict from a weight file and loading the backbone part of it strictly."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ...errors import ModelError
from ...io import safe_torch_load


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .pth/.pt (loaded with weights_only=True) or .safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"pretrained weight file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:
            raise ModelError(f"weight file {path} is not a readable safetensors file ({type(e).__name__}: {e})") from e
    state = safe_torch_load(path, what="weight file")
    for key in ("state_dict", "model"):  # common wrappers around a plain state dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"weight file {path} does not hold a state dict (a mapping of names to tensors)")
    return state


def _examples(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")


def load_backbone_state(
    model: nn.Module, state: dict[str, torch.Tensor], head_prefix: str, path: Path, model_name: str
) -> tuple[int, bool]:
    """Load `state` into `model`: every backbone tensor must match; the classifier (`head_prefix`) may not.

    Returns (tensors loaded, whether the pretrained classifier was loaded too).
    """
    own = model.state_dict()
    backbone_keys = [k for k in own if not k.startswith(head_prefix)]
    head_keys = [k for k in own if k.startswith(head_prefix)]
    # Files written before BatchNorm counted its batches lack num_batches_tracked; nothing is lost.
    missing = [k for k in backbone_keys if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [
        f"{k} (file {list(state[k].shape)}, model {list(own[k].shape)})"
        for k in backbone_keys
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong_shape:
        problems = []
        if missing:
            problems.append(f"{len(missing)} backbone tensors missing ({_examples(missing)})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected tensors ({_examples(unexpected)})")
        if wrong_shape:
            problems.append(f"{len(wrong_shape)} with the wrong shape ({_examples(wrong_shape)})")
        raise ModelError(
            f"weight file {path} does not fit backbone {model_name!r}: {'; '.join(problems)}. "
            f"Pass a state dict saved from torchvision/our zoo's {model_name}."
        )
    head_loaded = bool(head_keys) and all(k in state and state[k].shape == own[k].shape for k in head_keys)
    wanted = [k for k in state if k in backbone_keys or (head_loaded and k in head_keys)]
    model.load_state_dict({k: state[k] for k in wanted}, strict=False)
    return len(wanted), head_loaded


def last_linear(module: nn.Module) -> nn.Linear | None:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def classifier_tensors(linear: nn.Linear | None) -> dict[str, torch.Tensor] | None:
    if linear is None:
        return None
    bias = linear.bias.detach().clone() if linear.bias is not None else torch.zeros(linear.out_features)
    return {"weight": linear.weight.detach().clone(), "bias": bias}
