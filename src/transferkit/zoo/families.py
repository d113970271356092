"""Model families: a family name -> the function that builds (or locates) a model of that family.

Each layer registers its own families, so the zoo core knows none of them by name:

    @register_family("torchvision")
    def build(entry, weights, source, out_stride): ...

What a builder takes and returns is the contract between its family and the callers of that family:
the image families (registered by transferkit.vision.backbones) take (entry, weights, source,
out_stride) and return a Backbone; "huggingface" (transferkit.zoo.huggingface) takes the entry and
returns the model's folder.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

from ..errors import ModelError

Builder = TypeVar("Builder", bound=Callable[..., Any])

_FAMILIES: dict[str, Callable[..., Any]] = {}


def register_family(name: str) -> Callable[[Builder], Builder]:
    """Decorator: make the function the builder of family `name`; a second builder for a name is refused."""

    def register(builder: Builder) -> Builder:
        if name in _FAMILIES:
            raise ValueError(f"model family {name!r} is already registered (by {_FAMILIES[name].__module__})")
        _FAMILIES[name] = builder
        return builder

    return register


def family_names() -> list[str]:
    """The families registered so far in this process, sorted."""
    return sorted(_FAMILIES)


def get_family(name: str, model: str | None = None) -> Callable[..., Any]:
    """The builder of family `name`; an unknown family is a ModelError that names the registered ones."""
    try:
        return _FAMILIES[name]
    except KeyError:
        owner = f"model {model!r} has family {name!r}, which" if model else f"model family {name!r}"
        raise ModelError(
            f"{owner} is not registered; registered families: {', '.join(family_names()) or 'none'}. "
            f"Fix the entry's family, or import the module that registers it."
        ) from None
