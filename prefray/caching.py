"""Cache keys and retry delays for tasks (re-exported by `prefray.tasks`).

>>> @task(cache_key_fn=task_input_hash, retries=3, retry_delay_seconds=exponential_backoff(2))
... def fetch(url: str) -> bytes: ...
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import cloudpickle

__all__ = ["exponential_backoff", "hash_objects", "task_input_hash"]


def hash_objects(*objects: Any) -> str | None:
    """A stable sha256 of the objects, or None when they cannot be serialized.

    JSON (sorted keys) is tried first because it is the same in every process;
    cloudpickle covers the rest.
    """
    try:
        data = json.dumps(objects, sort_keys=True).encode("utf-8")
    except (TypeError, ValueError):
        try:
            data = cloudpickle.dumps(objects)
        except Exception:
            return None
    return hashlib.sha256(data).hexdigest()


def task_input_hash(context: Any, arguments: dict[str, Any]) -> str | None:
    """A cache key from the task's identity, its code and its inputs.

    Use as `cache_key_fn`. Returns None (no caching) when an argument cannot be
    serialized.
    """
    task = getattr(context, "task", None)
    task_run = getattr(context, "task_run", None)
    task_key = getattr(task, "task_key", None) or getattr(task_run, "task_key", None)
    fn = getattr(task, "fn", None)
    code = getattr(fn, "__code__", None)
    code_hex = code.co_code.hex() if code is not None else None
    return hash_objects(task_key, code_hex, arguments)


def exponential_backoff(backoff_factor: float) -> Callable[[int], list[float]]:
    """Retry delays that double: `backoff_factor * 2**attempt` seconds.

    Pass to `retry_delay_seconds`; the task calls it with its `retries`.

    >>> exponential_backoff(10)(4)
    [10, 20, 40, 80]
    """
    if backoff_factor < 0:
        raise ValueError(f"backoff_factor must be >= 0 seconds, got {backoff_factor!r}")

    def retry_backoff_callable(retries: int) -> list[float]:
        # the server accepts at most 50 delays; the last one repeats
        return [backoff_factor * 2**attempt for attempt in range(min(retries, 50))]

    return retry_backoff_callable
