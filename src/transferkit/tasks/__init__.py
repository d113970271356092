"""The task table: one line per task. A new task is one folder under tasks/ plus one line here.

Tasks defined elsewhere (a plugin, a test) join the table with `register_task(task)`.
"""
from __future__ import annotations

import difflib

from ..errors import SpecError
from .base import Task

_registered: dict[str, Task] = {}


def _tasks() -> dict[str, Task]:
    from .classification import TASK as classification
    from .detection.detectnet_v2 import TASK as detectnet_v2
    from .detection.yolo_v4_tiny import TASK as yolo_v4_tiny
    from .keypoints import TASK as keypoints
    from .segmentation import TASK as segmentation
    from .text_classification import TASK as text_classification
    from .token_classification import TASK as token_classification

    return {**{t.name: t for t in (classification, detectnet_v2, yolo_v4_tiny, segmentation, text_classification,
                                   token_classification, keypoints)},
            **_registered}


def register_task(task: Task) -> Task:
    """Add a task to the table (refuses a name already taken by a different task)."""
    if not task.name:
        raise ValueError("a task needs a name")
    existing = _tasks().get(task.name)
    if existing is not None and existing is not task:
        raise ValueError(f"task name {task.name!r} is already registered")
    _registered[task.name] = task
    return task


def task_names() -> list[str]:
    return list(_tasks())


def get_task(name: str) -> Task:
    tasks = _tasks()
    if name not in tasks:
        close = difflib.get_close_matches(name, list(tasks), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise SpecError(f"unknown task '{name}'{hint}; tasks: {', '.join(tasks)}")
    return tasks[name]
