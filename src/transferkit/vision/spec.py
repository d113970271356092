"""Spec keys every image task shares on top of the core sections."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..spec import TrainConfig


def cache_field():
    """`data.cache`: decode every image once and train from the pixels (vision/cache.py)."""
    return Field("none", description="decoded-image cache: none | ram (shared memory) | disk (memory-mapped "
                                     "files under data.cache_dir); images are decoded once, not every epoch")


def cache_dir_field():
    return Field(None, description="data.cache=disk: folder of the cached images (default "
                                   "$TRANSFERKIT_HOME/image_cache; shared by runs, keyed by file content)")


CacheMode = Literal["none", "ram", "disk"]


def cache_short_side_field():
    """`data.cache_short_side` (tasks whose labels are not pixel coordinates): how small the cache keeps images."""
    return Field("auto", description="data.cache=ram|disk: images whose shorter side is longer are cached reduced "
                                     "to it, in px (auto = twice data.image_size, enough for the random crops; "
                                     "full = cache at full size, exactly the pixels an uncached run decodes)")


def resolve_cache_short_side(value: int | str, image_size: int) -> int | None:
    """The shorter side the cache reduces to (None: full size)."""
    if value == "full":
        return None
    return 2 * image_size if value == "auto" else int(value)


class VisionTrainConfig(TrainConfig):
    """`train` keys of an image task: the core's plus the memory layout of image batches."""

    channels_last: bool = Field(True, description="NHWC memory layout (much faster convs on CPU)")
