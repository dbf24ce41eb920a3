"""What the flow engine keeps about one flow run while its body runs."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Iterator
from typing import Any

from prefray.futures import PrefrayFuture
from prefray.states import State

__all__ = ["RunBook"]


@dataclasses.dataclass
class RunBook:
    """Bookkeeping for a flow run: dynamic keys, the futures it made, and the
    runs completed by earlier attempts (so a retried flow does not redo them)."""

    is_async: bool = False
    attempt: int = 1
    futures: list[PrefrayFuture] = dataclasses.field(default_factory=list)
    # (task_key, index) -> the Completed state from an earlier attempt of this flow run
    completed: dict[tuple[str, int], State] = dataclasses.field(default_factory=dict)
    _counters: dict[str, Iterator[int]] = dataclasses.field(default_factory=dict)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    _keys: dict[int, tuple[str, int]] = dataclasses.field(default_factory=dict)

    def next_index(self, task_key: str) -> int:
        counter = self._counters.get(task_key)
        if counter is None:
            with self._lock:
                counter = self._counters.setdefault(task_key, itertools.count())
        return next(counter)

    def next_indices(self, task_key: str, n: int) -> list[int]:
        with self._lock:
            counter = self._counters.setdefault(task_key, itertools.count())
            return [next(counter) for _ in range(n)]

    def dynamic_key(self, index: int) -> str:
        # a re-run in a later attempt is a new task run: the old one keeps its state
        return str(index) if self.attempt == 1 else f"{index}.{self.attempt}"

    def record(self, future: PrefrayFuture, task_key: str, index: int) -> None:
        self.futures.append(future)
        self._keys[id(future)] = (task_key, index)

    def prior(self, task_key: str, index: int) -> State | None:
        return self.completed.get((task_key, index)) if self.completed else None

    def next_attempt(self) -> None:
        """Remember what completed, then reset for another attempt of the body."""
        for future in self.futures:
            state = future.wait_state(0)
            if state is not None and state.is_completed():
                self.completed[self._keys[id(future)]] = state
        self.futures = []
        self._keys = {}
        self._counters = {}
        self.attempt += 1

    def states(self) -> list[Any]:
        return list(self.futures)
