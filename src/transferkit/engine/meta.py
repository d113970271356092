"""ModelMeta: the typed, versioned record every checkpoint and exported model carries.

It says what a model is (task, labels, model name), what it eats (one `InputSpec` per network
input: name, dtype, shape with named dynamic axes, and how raw data becomes that tensor) and what
its task needs to rebuild it (`arch`). The shared verbs (export, INT8 calibration, latency, prune,
the ONNX predictor) read the inputs from here and never assume an image batch.

Stored as plain JSON-able data (`to_dict`), so checkpoints still load with
`torch.load(weights_only=True)`; `from_dict` also reads the untyped metadata of version 1 files.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import torch

from ..errors import ModelError

META_VERSION = 2

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "int64": torch.int64, "int32": torch.int32, "bool": torch.bool, "uint8": torch.uint8}


@dataclass(frozen=True)
class ImageParams:
    """How pixels become the input tensor: resized to height x width, scaled to [0, 1], then (x - mean) / std."""

    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int = 3


@dataclass(frozen=True)
class AudioParams:
    """How a waveform becomes the input tensor: resampled to sample_rate, then `features` (waveform, log_mel ...)."""

    sample_rate: int
    features: str = "waveform"
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TextParams:
    """How text becomes token ids: `tokenizer` (a zoo name or folder), truncated to max_length, lowercased or not."""

    tokenizer: str
    max_length: int
    lowercase: bool = False


@dataclass(frozen=True)
class InputSpec:
    """One network input. `shape` holds ints for fixed axes and names for dynamic ones ("batch", "length")."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    image: ImageParams | None = None
    audio: AudioParams | None = None
    text: TextParams | None = None
    value_range: tuple[float, float] | None = None  # integer inputs: example values are drawn from [low, high)

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ModelError(f"input {self.name!r}: dtype {self.dtype!r} is not one of {', '.join(_DTYPES)}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def example(self, batch: int = 1, sizes: Mapping[str, int] | None = None, seed: int = 0) -> torch.Tensor:
        """A random tensor of this input's dtype and shape; dynamic axes take `sizes` (default 8), batch `batch`."""
        sizes = {"batch": batch, **(sizes or {})}
        shape = [d if isinstance(d, int) else int(sizes.get(d, 8)) for d in self.shape]
        gen = torch.Generator().manual_seed(seed)
        if self.torch_dtype.is_floating_point:
            return torch.randn(shape, generator=gen).to(self.torch_dtype)
        low, high = self.value_range or (0, 2)
        return torch.randint(int(low), int(high), shape, generator=gen, dtype=self.torch_dtype)


def image_input(height: int, width: int, mean: Sequence[float], std: Sequence[float], name: str = "input") -> InputSpec:
    """The usual vision input: a float32 batch [N, 3, H, W] of normalised pixels."""
    return InputSpec(name=name, dtype="float32", shape=("batch", 3, int(height), int(width)),
                     image=ImageParams(int(height), int(width), tuple(float(v) for v in mean), tuple(float(v) for v in std)))


def tensor_input(shape: Sequence[int | str], name: str = "input", dtype: str = "float32",
                 value_range: tuple[float, float] | None = None) -> InputSpec:
    """A plain tensor input [batch, *shape] (a dynamic batch axis in front; names in `shape` are dynamic too)."""
    return InputSpec(name=name, dtype=dtype, shape=("batch", *shape), value_range=value_range)


@dataclass(frozen=True)
class ModelMeta:
    """What a model file is; see the module docstring."""

    task: str
    classes: tuple[str, ...]
    backbone: str | None
    inputs: tuple[InputSpec, ...]
    arch: Mapping[str, Any] = field(default_factory=dict)  # task facts that rebuild the network (dropout, anchors ...)
    pruned_shapes: Mapping[str, Any] | None = None  # layer sizes of a pruned network (optimize.prune.layer_shapes)
    export: Mapping[str, Any] = field(default_factory=dict)  # what an exported graph has built in (e.g. NMS settings)
    history: Mapping[str, Any] = field(default_factory=dict)  # provenance: pruned_from, the prune settings ...
    version: int = META_VERSION

    @property
    def image(self) -> ImageParams:
        """The image parameters of the first image input (a ModelError for a model that takes no image)."""
        for spec in self.inputs:
            if spec.image is not None:
                return spec.image
        raise ModelError(f"this {self.task} model takes no image input ({', '.join(i.name for i in self.inputs)})")

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs)

    def example_inputs(self, batch: int = 1, sizes: Mapping[str, int] | None = None) -> tuple[torch.Tensor, ...]:
        return tuple(spec.example(batch, sizes, seed=i) for i, spec in enumerate(self.inputs))

    def with_updates(self, **changes: Any) -> "ModelMeta":
        return replace(self, **changes)

    # -- storage -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version, "task": self.task, "classes": list(self.classes), "backbone": self.backbone,
            "inputs": [input_to_dict(i) for i in self.inputs], "arch": _plain(self.arch),
            "pruned_shapes": _plain(self.pruned_shapes), "export": _plain(self.export), "history": _plain(self.history),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "model") -> "ModelMeta":
        if not isinstance(data, Mapping) or "task" not in data:
            raise ModelError(f"{source}: its transferkit metadata is not a mapping with a 'task'; re-export or retrain it")
        version = data.get("version", 1)
        if version == 1:
            from ..compat import meta_v1_to_v2

            data = meta_v1_to_v2(data, source)
        elif version != META_VERSION:
            raise ModelError(f"{source} has metadata version {version}; this transferkit reads versions 1 to "
                             f"{META_VERSION}: upgrade transferkit")
        try:
            return cls(
                task=str(data["task"]), classes=tuple(str(c) for c in data.get("classes") or ()),
                backbone=data.get("backbone"), inputs=tuple(_input_from_dict(i) for i in data["inputs"]),
                arch=dict(data.get("arch") or {}), pruned_shapes=data.get("pruned_shapes"),
                export=dict(data.get("export") or {}), history=dict(data.get("history") or {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"{source}: its transferkit metadata is malformed ({type(e).__name__}: {e}); "
                             "re-export or retrain it") from None


def input_to_dict(spec: InputSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"name": spec.name, "dtype": spec.dtype, "shape": list(spec.shape)}
    for kind in ("image", "audio", "text"):
        params = getattr(spec, kind)
        if params is not None:
            out[kind] = _plain(vars(params))
    if spec.value_range is not None:
        out["value_range"] = list(spec.value_range)
    return out


def _input_from_dict(data: Mapping[str, Any]) -> InputSpec:
    image = data.get("image")
    audio = data.get("audio")
    text = data.get("text")
    return InputSpec(
        name=str(data["name"]), dtype=str(data["dtype"]), shape=tuple(data["shape"]),
        image=None if image is None else ImageParams(int(image["height"]), int(image["width"]), tuple(image["mean"]),
                                                     tuple(image["std"]), int(image.get("channels", 3))),
        audio=None if audio is None else AudioParams(int(audio["sample_rate"]), audio.get("features", "waveform"),
                                                     dict(audio.get("params") or {})),
        text=None if text is None else TextParams(str(text["tokenizer"]), int(text["max_length"]),
                                                  bool(text.get("lowercase", False))),
        value_range=None if data.get("value_range") is None else tuple(data["value_range"]),
    )


def _plain(value: Any) -> Any:
    """Mappings, tuples and lists as plain dicts and lists (what JSON and weights_only loading accept)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def as_inputs(batch: Any) -> tuple[torch.Tensor, ...]:
    """A batch of model inputs as a tuple: one tensor for a single-input model, or a tuple/list of them."""
    if isinstance(batch, torch.Tensor):
        return (batch,)
    if isinstance(batch, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in batch):
        return tuple(batch)
    raise TypeError(f"model inputs must be a tensor or a tuple of tensors, got {type(batch).__name__}")
