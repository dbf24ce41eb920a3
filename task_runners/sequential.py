"""`SequentialTaskRunner`: each submitted task run runs to the end, in order, on
the flow's own thread, before `submit` returns."""

from __future__ import annotations

from prefray.engine.call import TaskRunCall
from prefray.engine.task_run import run_task
from prefray.futures import DoneFuture, PrefrayFuture
from task_runners.base import BaseTaskRunner

__all__ = ["SequentialTaskRunner"]


class SequentialTaskRunner(BaseTaskRunner):
    """Runs task runs one at a time, where the flow runs."""

    reports_here = True

    def submit(self, call: TaskRunCall) -> PrefrayFuture:
        self._check_started()
        state = run_task(call)  # a crash here propagates to the flow, as it would inline
        return DoneFuture(call.task_run.id, state, call.task_run.name)
