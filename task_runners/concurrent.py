"""`ConcurrentTaskRunner`: task runs on a bounded pool of threads.

The pool is created when the flow run starts the runner and shut down when
it stops; at most `max_workers` threads (default: the setting
`task_runner_max_workers`, else `min(32, cpu_count + 4)`), reused across task
runs. Good for I/O-bound tasks; CPU-bound Python code is serialised by the GIL
(use the Ray runner for that).
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from typing import Any

from prefray.engine.call import TaskRunCall
from prefray.engine.task_run import run_task
from prefray.exceptions import TaskRunnerError
from prefray.futures import PrefrayFuture, ThreadFuture
from prefray.settings import get_current_settings
from prefray.states import Cancelled, State
from task_runners.base import BaseTaskRunner

__all__ = ["ConcurrentTaskRunner"]


class ConcurrentTaskRunner(BaseTaskRunner):
    """Runs task runs concurrently on a bounded thread pool."""

    reports_here = True

    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__()
        if max_workers is not None and (not isinstance(max_workers, int) or max_workers < 1):
            raise ValueError(f"max_workers must be a whole number >= 1, got {max_workers!r}.")
        self.max_workers = max_workers
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._outstanding: dict[concurrent.futures.Future, TaskRunCall] = {}
        self._lock = threading.Lock()

    def _config(self) -> dict[str, Any]:
        return {"max_workers": self.max_workers}

    def _start(self) -> None:
        workers = self.max_workers or get_current_settings().task_runner_max_workers
        workers = workers or min(32, (os.cpu_count() or 1) + 4)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="prefray-task"
        )

    def _stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self._outstanding.clear()

    def submit(self, call: TaskRunCall) -> PrefrayFuture:
        self._check_started()
        assert self._pool is not None
        try:
            inner = self._pool.submit(_run_in_worker, call)
        except RuntimeError as exc:  # the pool was shut down under us
            raise TaskRunnerError(f"Cannot submit task run {call.task_run.name}: {exc}") from exc
        with self._lock:
            self._outstanding[inner] = call
        inner.add_done_callback(self._forget)
        return ThreadFuture(call.task_run.id, inner, call.task_run.name)

    def _forget(self, inner: concurrent.futures.Future) -> None:
        with self._lock:
            self._outstanding.pop(inner, None)

    def cancel_all(self) -> None:
        with self._lock:
            pending = list(self._outstanding.items())
        for inner, call in pending:
            if inner.cancel():
                _report_cancelled(call)


def _run_in_worker(call: TaskRunCall) -> State:
    # Nothing above a pool thread can handle a crash: the Crashed state is the answer.
    return run_task(call, raise_crash=False)


def _report_cancelled(call: TaskRunCall) -> None:
    from prefray.engine.reporting import get_state_reporter

    state = Cancelled(message="The flow run ended before this task run started.")
    get_state_reporter().report(call.task_run.id, state)
