"""The worker side: what a Ray worker process runs for one task run.

`execute` is the remote function (wrapped with `ray.remote` once per process,
see `remote_execute`). On the worker it rebuilds the `TaskRunCall`, runs the
engine's entry point with a `CollectingReporter` (its transitions travel back
with the state, so the driver ships them in its batches), flushes what the
task logged, and returns `(result, value)` (see `payload.encode_result`): Ray
keeps the value in the object store, where downstream tasks read it.

Per worker process it keeps the deserialised (task, settings) payloads, and,
through prefray's client pools, one API connection pool per API URL.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import threading
from typing import Any

from prefray.engine.call import TaskRunCall
from prefray.engine.reporting import CollectingReporter, _Answers
from prefray.engine.task_run import run_task
from prefray.logging import flush_logs
from prefray.settings import get_current_settings, set_process_settings
from prefray.states import StateType
from task_runners.ray import deadline
from task_runners.ray.payload import (
    NotCompleted,
    Shared,
    Upstream,
    decode_spec,
    encode_completed,
    encode_result,
    portable_exception,
    small_value,
    with_run_template,
)

__all__ = ["execute", "probe_api", "remote_execute", "remote_probe"]

_PAYLOAD_CACHE_SIZE = 64
_payloads: collections.OrderedDict[str, Shared] = collections.OrderedDict()
_payloads_lock = threading.Lock()
_last: tuple[str, Shared] | None = None  # the payload the latest run used


def execute(head: list[Any], *values: Any) -> tuple[Any, Any]:
    """`head` is `[shared_key, shared payload (None: it is values[0]), spec]`;
    `values` are the upstream values (see `payload`)."""
    shared_key, shared, spec = head
    if shared is None:
        shared, upstream_values = values[0], values[1:]
    else:
        upstream_values = values
    common = _load_shared(shared_key, shared)
    if get_current_settings() is not common.settings and _in_worker_process():
        # the snapshot becomes the worker process's settings (runs of one flow
        # run share it): the engine then finds it in force, no `use_settings`
        set_process_settings(common.settings)
    call = _rebuild_call(common, spec, upstream_values)
    reporter = SelfCreatingReporter(call.task_run)
    call.reporter = reporter
    try:
        state = run_task(call, raise_crash=False)  # a BaseException comes back as Crashed
    finally:
        deadline.disarm()
    # no records queued: returns at once, no request
    flush_logs(common.settings.log_flush_timeout)
    return _split_result(state, reporter.take(), call.task_run.id)


class SelfCreatingReporter(CollectingReporter):
    """A `CollectingReporter` that, when the engine makes it send on its own (a
    crash, a decision only the server can make), sends this run's creation first:
    the driver queues creations of `.submit()` calls in its batches, so the run
    may not be on the server yet. Creation is an upsert, so a replay is harmless.

    One per run, most of which only `report`: it shares one lock per process
    (held only to swap the list) and makes its answers book on first use."""

    _lock = threading.Lock()

    def __init__(self, task_run: Any) -> None:  # no super().__init__: see above
        self._items: list[Any] = []
        self._task_run: Any = task_run

    @functools.cached_property
    def _answers(self) -> _Answers:  # type: ignore[override]
        return _Answers()

    def flush(self, timeout: float | None = None) -> bool:
        if self._task_run is not None and self._items:
            from prefray.states import Pending

            self._items.insert(0, self._task_run.to_create(Pending()))
            self._task_run = None
        return super().flush(timeout)

    def take(self) -> list[Any]:
        """What is held, as queued (the driver builds the wire objects)."""
        with self._lock:
            items, self._items = self._items, []
        return items


@functools.cache
def _in_worker_process() -> bool:
    """Whether Ray runs this as a worker process (never a driver's own settings)."""
    import ray

    return ray._private.worker.global_worker.mode == ray.WORKER_MODE


def _load_shared(key: str, shared: bytes) -> Shared:
    last = _last
    if last is not None and last[0] == key:  # runs of one map come in a row: no lock
        return last[1]
    return _load_shared_cached(key, shared)


def _load_shared_cached(key: str, shared: bytes) -> Shared:
    global _last
    with _payloads_lock:
        found = _payloads.get(key)
        if found is not None:
            _payloads.move_to_end(key)
            _last = (key, found)
            return found
    import cloudpickle

    found = cloudpickle.loads(shared)
    found = dataclasses.replace(found, task=deadline.with_hard_deadline(found.task))
    found = with_run_template(found)
    with _payloads_lock:
        _payloads[key] = found
        while len(_payloads) > _PAYLOAD_CACHE_SIZE:
            _payloads.popitem(last=False)
        _last = (key, found)
    return found


def _rebuild_call(common: Shared, spec: list[Any], values: tuple[Any, ...]) -> TaskRunCall:
    task_run, parameters, wait_for, ids, dynamic_index = decode_spec(spec, common)
    if values:
        futures = [_resolved_future(ids[i], v) for i, v in enumerate(values)]
        parameters = _substitute(parameters, futures)
        wait_for = _substitute(wait_for, futures) if wait_for else wait_for
    return TaskRunCall(
        task=common.task,
        task_run=task_run,
        parameters=parameters,
        settings=common.settings,
        wait_for=wait_for,
        flow_run_id=common.flow_run_id,
        flow_name=common.flow_name,
        log_prints=common.log_prints,
        dynamic_index=dynamic_index,
    )


def _resolved_future(task_run_id: Any, value: Any) -> Any:
    from prefray.futures import DoneFuture
    from prefray.states import Completed

    if isinstance(value, NotCompleted):
        state = value.state
    else:
        state = Completed().with_value(value)
    return DoneFuture(task_run_id, state)


def _substitute(expr: Any, futures: list[Any]) -> Any:
    from prefray.utilities.collections import visit_collection

    def visit(item: Any) -> Any:
        return futures[item.index] if isinstance(item, Upstream) else item

    return visit_collection(expr, visit)


def _split_result(state: Any, reports: list[Any], run_id: Any) -> tuple[list[Any], Any]:
    """(the small result the driver fetches, the value object that stays in the store)."""
    exception = state.exception
    if exception is None:
        if state.type is _COMPLETED and state.has_value:  # the common case
            value = state.held_value
            return encode_completed(state, reports, run_id, value), value
    else:
        exception = portable_exception(exception)
    if state.has_value and state.is_completed():
        value = state.held_value
        return encode_result(state, reports, exception, small_value(value), run_id), value
    result = encode_result(state, reports, exception, None, run_id)
    marker = state.copy_for_wire()
    if exception is not None:
        marker.with_exception(exception)
    return result, NotCompleted(marker)


_COMPLETED = StateType.COMPLETED


def probe_api(url: str, timeout: float) -> str | None:
    """On a worker: None if `url`/health answers, else what went wrong."""
    import httpx

    import prefray.engine.task_run  # noqa: F401 - fail here if prefray is missing
    from prefray.client.clients import normalize_api_url

    health = normalize_api_url(url) + "/api/health"
    try:
        answer = httpx.get(health, timeout=timeout)
        answer.raise_for_status()
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@functools.cache
def remote_execute() -> Any:
    """`execute` as a Ray remote function: wrapped once per process, never per call."""
    import ray

    return ray.remote(num_returns=2, max_retries=0)(execute)


@functools.cache
def remote_probe() -> Any:
    import ray

    return ray.remote(num_cpus=0, max_retries=0)(probe_api)
