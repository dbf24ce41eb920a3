"""The task-runner contract: where a flow's task runs execute.

A runner is configured when the flow is decorated and started by the flow
engine for one flow run (`with runner.start():`), which owns what it starts
and stops it on exit. `submit(call)` hands over one `TaskRunCall` and returns
a `PrefrayFuture`; the call is run with `prefray.engine.task_run.run_task`.
A runner pickles as its unstarted configuration, so a started runner can
travel (inside a Flow or Task) without its threads or connections, and
`duplicate()` gives an unstarted copy for concurrent use.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from prefray.engine.call import TaskRunCall
from prefray.exceptions import TaskRunnerError
from prefray.futures import DoneAndNotDone, PrefrayFuture
from prefray.futures import wait as wait_futures

__all__ = ["BaseTaskRunner"]

R = TypeVar("R", bound="BaseTaskRunner")


class BaseTaskRunner(abc.ABC):
    # True where submitted calls run in this process (threads), reporting to its
    # state reporter as they start: the engine may then hold a submitted run's
    # creation until its first report, so the two travel together
    reports_here: bool = False

    def __init__(self) -> None:
        self._started = False

    @property
    def name(self) -> str:
        return type(self).__name__.replace("TaskRunner", "").lower()

    # lifecycle -------------------------------------------------------------
    @contextlib.contextmanager
    def start(self: R) -> Iterator[R]:
        """Start (and, on leaving the block, stop) what this runner needs."""
        if self._started:
            raise TaskRunnerError(
                f"{type(self).__name__} is already started; runners are started once per "
                f"flow run. Use runner.duplicate() to run another flow concurrently."
            )
        self._start()
        self._started = True
        try:
            yield self
        finally:
            self._started = False
            self._stop()

    def _start(self) -> None:
        """Acquire resources (threads, a cluster connection)."""
        return None

    def _stop(self) -> None:
        """Release what `_start` acquired; runs even when the flow failed."""
        return None

    def _check_started(self) -> None:
        if not self._started:
            raise TaskRunnerError(
                f"{type(self).__name__} is not started: submit() is only valid inside "
                f"`with runner.start():` (the flow engine does this for a flow run)."
            )

    # work ------------------------------------------------------------------
    @abc.abstractmethod
    def submit(self, call: TaskRunCall) -> PrefrayFuture:
        """Run `call` (eventually) and return its future."""

    def wait(
        self, futures: Iterable[PrefrayFuture], timeout: float | None = None
    ) -> DoneAndNotDone:
        """Wait for `futures` up to `timeout` seconds: (done, not_done)."""
        return wait_futures(futures, timeout)

    def cancel_all(self) -> None:
        """Cancel submitted work that has not started; started work finishes."""
        return None

    # copies and pickling -----------------------------------------------------
    def _config(self) -> dict[str, Any]:
        """The constructor arguments that recreate this runner, unstarted."""
        return {}

    def duplicate(self: R) -> R:
        """An unstarted copy with the same configuration."""
        return type(self)(**self._config())

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self._config()))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({args})"


def _rebuild(cls: type[BaseTaskRunner], config: dict[str, Any]) -> BaseTaskRunner:
    return cls(**config)
