"""Task runners: where a flow's task runs execute.

`SequentialTaskRunner` and `ConcurrentTaskRunner` are imported here;
`RayTaskRunner` and `remote_options` are loaded on first use, so that importing
this package never imports Ray.
"""

from __future__ import annotations

from typing import Any

from task_runners.base import BaseTaskRunner
from task_runners.concurrent import ConcurrentTaskRunner
from task_runners.sequential import SequentialTaskRunner

__all__ = [
    "BaseTaskRunner",
    "ConcurrentTaskRunner",
    "RayTaskRunner",
    "SequentialTaskRunner",
    "remote_options",
]

_LAZY = {"RayTaskRunner", "remote_options"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from task_runners import ray as ray_runner

        return getattr(ray_runner, name)
    raise AttributeError(f"module 'task_runners' has no attribute {name!r}")
