"""The Ray task runner: task runs fanned out over a Ray cluster.

Importing this package does not import Ray; the runner does when it starts.
"""

from __future__ import annotations

from task_runners.ray.options import remote_options
from task_runners.ray.runner import RayTaskRunner

__all__ = ["RayTaskRunner", "remote_options"]
