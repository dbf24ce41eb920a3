"""Autonomous task runs: `.submit()` and `.map()` called outside any flow.

    @task
    def double(x: int) -> int:
        return 2 * x

    future = double.submit(21)       # queued: a Scheduled task run, no flow run
    futures = double.map([1, 2, 3])  # one queued run per item, in one request
    future.result()                  # 42, once a task server has run it

Each run's parameters are written to result storage (cloudpickle), and the
server keeps the reference next to the queued run; `prefray task-server serve
module:double` (or `prefray.task_server.serve(double)`) claims the runs and
executes them. The returned futures wait by polling the API; their results
are read from result storage, since task servers persist the results of the
runs they execute.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from prefray.engine.mapping import expand_map_parameters
from prefray.futures import PrefrayFuture
from prefray.schemas import TaskRunCreate, TaskRunSubmit
from prefray.settings import Settings
from prefray.states import TERMINAL_TYPES, Scheduled, State
from prefray.utilities.callables import get_call_parameters

if TYPE_CHECKING:
    from prefray.tasks import Task

__all__ = ["QueuedTaskRunFuture", "map_autonomous", "submit_autonomous"]

_POLL_MIN, _POLL_MAX = 0.05, 0.5


class QueuedTaskRunFuture(PrefrayFuture):
    """A run queued for a task server; waiting polls the API for its final state."""

    def __init__(self, task_run_id: uuid.UUID, name: str, settings: Settings) -> None:
        super().__init__(task_run_id, name)
        self._settings = settings

    def _wait(self, timeout: float | None = None) -> State | None:
        from prefray.client import SyncPrefrayClient

        deadline = None if timeout is None else time.monotonic() + timeout
        delay = _POLL_MIN
        with SyncPrefrayClient(settings=self._settings) as client:
            while True:
                state = client.read_task_run(self.task_run_id).state
                if state is not None and state.type in TERMINAL_TYPES:
                    return state
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                time.sleep(delay if left is None else min(delay, left))
                delay = min(delay * 2, _POLL_MAX)


def submit_autonomous(task: Task, args: tuple, kwargs: dict, wait_for: Any) -> QueuedTaskRunFuture:
    """`task.submit(...)` outside a flow: queue one run for a task server."""
    _refuse_wait_for(task, wait_for)
    parameters = get_call_parameters(task.fn, args, kwargs)
    return _queue(task, [parameters])[0]


def map_autonomous(
    task: Task, args: tuple, kwargs: dict, wait_for: Any
) -> list[QueuedTaskRunFuture]:
    """`task.map(...)` outside a flow: queue one run per item, in one request."""
    _refuse_wait_for(task, wait_for)
    parameters = get_call_parameters(task.fn, args, kwargs)
    return _queue(task, expand_map_parameters(task.fn, parameters))


def _queue(task: Task, per_run: list[dict[str, Any]]) -> list[QueuedTaskRunFuture]:
    from prefray.client import SyncPrefrayClient
    from prefray.engine.calls import _settings_with_api, _tags
    from prefray.results import persist_result

    settings = _settings_with_api()
    tags = _tags(task)
    items = []
    for parameters in per_run:
        _refuse_futures(task, parameters)
        run_id = uuid.uuid4()
        reference = persist_result(
            parameters, storage=task.result_storage, key=f"parameters-{run_id}"
        )
        create = TaskRunCreate(
            id=run_id,
            name=task.run_name(parameters, run_id.hex[:8]),
            task_key=task.task_key,
            dynamic_key=run_id.hex,
            tags=tags,
            empirical_policy=task.empirical_policy,
            state=Scheduled(),
        )
        items.append(TaskRunSubmit(task_run=create, parameters=reference))
    with SyncPrefrayClient(settings=settings) as client:
        runs = client.submit_task_runs(items)
    return [QueuedTaskRunFuture(run.id, run.name, settings) for run in runs]


def _refuse_wait_for(task: Task, wait_for: Any) -> None:
    if wait_for:
        raise ValueError(
            f"Task {task.name!r}: wait_for= needs a flow run; outside a flow, .submit() and "
            ".map() queue runs for a task server and cannot wait for other runs. Wait for "
            "the futures first (future.wait()), then submit."
        )


def _refuse_futures(task: Task, parameters: dict[str, Any]) -> None:
    for name, value in parameters.items():
        if isinstance(value, PrefrayFuture):
            raise TypeError(
                f"Task {task.name!r}: parameter {name!r} is a future; outside a flow, pass its "
                "value instead (future.result())."
            )
