"""Driver-side handles: `RayFuture` and `RayState` (a final state whose value
stays in Ray's object store until someone asks for it)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import PrivateAttr

from prefray.futures import PrefrayFuture
from prefray.states import State
from task_runners.ray.payload import NotCompleted

__all__ = ["RayFuture", "RayState"]


class RayState(State):
    """A final state from a Ray worker. `result()` fetches the value from the
    object store on first use (the driver holds only a reference until then)."""

    _value_ref: Any = PrivateAttr(default=None)
    _fetch_lock: Any = PrivateAttr(default=None)

    def keeping_value_in(self, value_ref: Any) -> RayState:
        """This state, whose value (if it completed) is `value_ref` in the store."""
        if self.is_completed() and self.data is None and not self.has_value:
            self._value_ref = value_ref
            self._fetch_lock = threading.Lock()
        return self

    def fetch_value(self) -> None:
        """Bring the value into this process (once)."""
        ref, lock = self._value_ref, self._fetch_lock
        if ref is None or self.has_value:
            return
        with lock:
            if self.has_value:
                return
            import ray

            value = ray.get(ref)
            if isinstance(value, NotCompleted):  # a completed run whose value was not kept
                self.data = value.state.data
            else:
                self.with_value(value)
            self._value_ref = None

    def result(self, raise_on_failure: bool = True) -> Any:
        self.fetch_value()
        return super().result(raise_on_failure=raise_on_failure)

    def __getstate__(self) -> dict[Any, Any]:
        # travels with its value: an ObjectRef is only meaningful to this driver
        self.fetch_value()
        state = super().__getstate__()
        private = dict(state.get("__pydantic_private__") or {})
        private["_value_ref"], private["_fetch_lock"] = None, None
        state["__pydantic_private__"] = private
        return state


class RayFuture(PrefrayFuture):
    """A task run on Ray. Its final state is set by the runner's monitor once the
    run is over (retries included); waiting never fetches the value."""

    def __init__(self, task_run_id: uuid.UUID, name: str = "") -> None:
        super().__init__(task_run_id, name)
        self._state: State | None = None
        self._final = False
        self._callbacks: list[Callable[[PrefrayFuture], Any]] = []
        self._lock = threading.Lock()  # guards _final and _callbacks
        # held until the final state is set: waiting is acquiring it (a map makes
        # one future per run: a threading.Event costs ~2 µs to make, a lock 0.05)
        self._latch = threading.Lock()
        self._latch.acquire()
        # the attempt whose refs downstream submissions use (set by the runner)
        self.current: Any = None

    def _wait(self, timeout: float | None = None) -> State | None:
        if self._final:
            return self._state
        if timeout is None:
            got = self._latch.acquire()
        elif timeout <= 0:
            got = self._latch.acquire(False)
        else:
            got = self._latch.acquire(True, min(timeout, threading.TIMEOUT_MAX))
        if got:
            self._latch.release()  # for the next waiter
        elif not self._final:  # (another waiter may hold it for an instant)
            return None
        return self._state

    def _add_done_callback(self, fn: Callable[[PrefrayFuture], Any]) -> bool:
        with self._lock:
            if not self._final:
                self._callbacks.append(fn)
                return True
        fn(self)
        return True

    def set_final(self, state: State) -> None:
        with self._lock:
            self._state = state
            first, self._final = not self._final, True
            callbacks, self._callbacks = self._callbacks, []
        if first:
            self._latch.release()
        for fn in callbacks:
            fn(self)

    def is_final(self) -> bool:
        return self._final

    def __getstate__(self) -> dict[str, Any]:
        # A future cannot travel; what travels is its final state (with its value).
        state = self.wait_state()
        if isinstance(state, RayState):
            state.fetch_value()
        return {
            "task_run_id": self.task_run_id,
            "name": self.name,
            "asynchronous": self.asynchronous,
            "_final_state": state,
        }

    def __setstate__(self, data: dict[str, Any]) -> None:
        self.__dict__.update(data)
        self._state = data["_final_state"]
        self._final = True
        self._callbacks = []
        self._lock = threading.Lock()
        self._latch = threading.Lock()
        self.current = None
