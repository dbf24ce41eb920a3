"""`TaskRunCall`: everything a task run needs to run anywhere (a thread, a Ray worker)."""

from __future__ import annotations

import dataclasses
import uuid
from typing import TYPE_CHECKING, Any

from prefray.schemas import TaskRun
from prefray.settings import Settings

if TYPE_CHECKING:
    from prefray.tasks import Task

__all__ = ["TaskRunCall"]


@dataclasses.dataclass
class TaskRunCall:
    """One task run to execute: the unit a task runner receives.

    Picklable (cloudpickle) as long as the parameters are; upstream futures stay
    futures in `parameters` and `wait_for` and are resolved where the call runs.
    `reporter` is set where the call runs (None: the process's state reporter);
    `flush_logs` is set by runners whose calls run outside the driver process.
    """

    task: Task
    task_run: TaskRun
    parameters: dict[str, Any]
    settings: Settings
    wait_for: list[Any] | None = None
    flow_run_id: uuid.UUID | None = None
    flow_name: str | None = None
    log_prints: bool = False
    reporter: Any = None
    flush_logs: bool = False
    dynamic_index: int | None = None  # the call's place among its task's runs
    # tags with a concurrency limit, fetched once per flow run (None: not known here)
    limited_tags: frozenset[str] | None = None

    @property
    def task_run_id(self) -> uuid.UUID:
        return self.task_run.id
