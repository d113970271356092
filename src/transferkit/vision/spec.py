"""Spec keys every image task shares on top of the core sections."""
from __future__ import annotations

from pydantic import Field

from ..spec import TrainConfig


class VisionTrainConfig(TrainConfig):
    """`train` keys of an image task: the core's plus the memory layout of image batches."""

    channels_last: bool = Field(True, description="NHWC memory layout (much faster convs on CPU)")
