"""Futures: handles on task runs that a runner is executing.

`PrefrayFuture` is the interface every runner's future implements: runners
subclass it and implement `_wait(timeout) -> State | None` (the final state, or
None if it is not final within `timeout`). Everything else is built on that.

In an async flow, futures of async tasks are "asynchronous" (as in Prefect 2):
their `result()` and `wait()` return awaitables.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from prefray.states import Cancelled, Crashed, Pending, State

__all__ = ["DoneFuture", "PrefrayFuture", "ThreadFuture", "as_completed", "wait"]


class PrefrayFuture:
    """A handle on one task run: `.result()`, `.wait()`, `.get_state()`, `.task_run_id`."""

    def __init__(self, task_run_id: uuid.UUID, name: str = "", asynchronous: bool = False):
        self.task_run_id = task_run_id
        self.name = name
        self.asynchronous = asynchronous
        self._final_state: State | None = None

    # runner-specific ------------------------------------------------------
    def _wait(self, timeout: float | None = None) -> State | None:
        raise NotImplementedError

    def _add_done_callback(self, fn: Any) -> bool:
        """Call `fn(self)` when done; False where a runner cannot (then callers poll)."""
        return False

    # public ---------------------------------------------------------------
    def wait_state(self, timeout: float | None = None) -> State | None:
        """The final state, blocking up to `timeout` seconds (always sync)."""
        if self._final_state is None:
            self._final_state = self._wait(timeout)
        return self._final_state

    def wait(self, timeout: float | None = None) -> Any:
        """Wait up to `timeout` seconds for the run to finish; its final state or None."""
        if self.asynchronous:
            return asyncio.to_thread(self.wait_state, timeout)
        return self.wait_state(timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> Any:
        """The task's return value; raises its exception if it failed (unless
        `raise_on_failure=False`), TimeoutError if not finished within `timeout`."""
        if self.asynchronous:
            return asyncio.to_thread(self._result, timeout, raise_on_failure)
        return self._result(timeout, raise_on_failure)

    def _result(self, timeout: float | None, raise_on_failure: bool) -> Any:
        state = self.wait_state(timeout)
        if state is None:
            raise TimeoutError(
                f"Task run {self.task_run_id} did not finish within {timeout} seconds."
            )
        return state.result(raise_on_failure=raise_on_failure)

    def get_state(self) -> State:
        """The final state if the run is done, else Pending (never blocks)."""
        state = self.wait_state(0)
        return state if state is not None else Pending()

    def done(self) -> bool:
        return self.wait_state(0) is not None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name or self.task_run_id})"

    def __bool__(self) -> bool:  # `if future:` must never block
        return True


class DoneFuture(PrefrayFuture):
    """A future for a run that has already finished (sequential runs, inline calls)."""

    def __init__(self, task_run_id: uuid.UUID, state: State, name: str = "", **kw: Any):
        super().__init__(task_run_id, name, **kw)
        self._final_state = state

    def _wait(self, timeout: float | None = None) -> State | None:
        return self._final_state

    def _add_done_callback(self, fn: Any) -> bool:
        fn(self)
        return True


class ThreadFuture(PrefrayFuture):
    """A future over a `concurrent.futures.Future` that resolves to a `State`."""

    def __init__(self, task_run_id: uuid.UUID, inner: concurrent.futures.Future, name: str = ""):
        super().__init__(task_run_id, name)
        self._inner = inner

    def _wait(self, timeout: float | None = None) -> State | None:
        try:
            return self._inner.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            return None
        except concurrent.futures.CancelledError:
            return Cancelled(message="The flow run ended before this task run started.")
        except Exception as exc:  # the engine itself failed (e.g. the API is gone)
            return Crashed(message=f"The task-run engine failed: {exc}").with_exception(exc)

    def _add_done_callback(self, fn: Any) -> bool:
        self._inner.add_done_callback(lambda _: fn(self))
        return True

    def __getstate__(self) -> dict[str, Any]:
        # A thread future cannot travel; what travels is its final state.
        state = dict(self.__dict__)
        state["_final_state"] = self.wait_state()
        state["_inner"] = None
        return state


class DoneAndNotDone(NamedTuple):
    done: set[PrefrayFuture]
    not_done: set[PrefrayFuture]


def wait(futures: Iterable[PrefrayFuture], timeout: float | None = None) -> DoneAndNotDone:
    """Wait for all `futures` (at most `timeout` seconds in all); (done, not_done)."""
    futures = list(futures)
    deadline = None if timeout is None else time.monotonic() + timeout
    done: set[PrefrayFuture] = set()
    for future in futures:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if future.wait_state(left) is not None:
            done.add(future)
    return DoneAndNotDone(done, {f for f in futures if f not in done})


def as_completed(
    futures: Iterable[PrefrayFuture], timeout: float | None = None
) -> Iterator[PrefrayFuture]:
    """Yield futures as they finish; TimeoutError if some are not done in `timeout`."""
    import queue

    pending = list(dict.fromkeys(futures))
    finished: queue.SimpleQueue[PrefrayFuture] = queue.SimpleQueue()
    polled = [f for f in pending if not f._add_done_callback(finished.put)]
    deadline = None if timeout is None else time.monotonic() + timeout
    remaining = len(pending)
    while remaining:
        future = _next_finished(finished, polled, deadline)
        if future is None:
            raise TimeoutError(f"{remaining} futures did not finish within {timeout} seconds.")
        remaining -= 1
        yield future


def _next_finished(
    finished: Any, polled: list[PrefrayFuture], deadline: float | None
) -> PrefrayFuture | None:
    import queue

    delay = 0.001
    while True:
        for future in polled:
            if future.wait_state(0) is not None:
                polled.remove(future)
                return future
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return None
        step = delay if polled else left
        try:
            return finished.get(timeout=step if step is None else max(step, 0))
        except queue.Empty:
            delay = min(delay * 2, 0.05)
