"""Driver side, per submission: payloads, placeholders, options, the Ray call.

`Plan` is one task run as the runner keeps it (its call, its parameters with
upstream futures replaced by `Upstream` placeholders, the upstream futures by
argument index, the Ray options). `Attempt` is one Ray task executing it;
a plan gets a new attempt when its retries re-submit it, or when an upstream
it consumed was itself re-run.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from prefray.engine.call import TaskRunCall
from prefray.exceptions import SerializationError
from prefray.futures import PrefrayFuture
from prefray.utilities.collections import visit_collection
from task_runners.ray.futures import RayFuture
from task_runners.ray.options import current_options, function_options, merged_options
from task_runners.ray.payload import NotCompleted, Shared, Upstream, encode_spec
from task_runners.ray.worker import remote_execute

__all__ = ["Attempt", "Plan", "Submitter"]

_SCALARS = (int, float, str, bytes, bool, type(None), uuid.UUID)
_OPTIONS_CACHE_SIZE = 256
_INLINE_PAYLOAD_BYTES = 32 * 1024  # beyond this, (task, settings) goes to the object store once


@dataclasses.dataclass(eq=False)
class Plan:
    call: TaskRunCall
    future: RayFuture
    parameters: dict[str, Any]  # with Upstream placeholders
    wait_for: list[Any] | None
    upstreams: list[RayFuture]  # by placeholder index
    remote: Any  # the remote function with this run's options
    shared: tuple[str, Any]  # (key, pickled (task, settings) or its ObjectRef)


@dataclasses.dataclass(eq=False)
class Attempt:
    plan: Plan
    number: int  # 1 for the first run; a retry after a crash adds one
    state_ref: Any
    value_ref: Any
    consumed: list[Attempt]  # the upstream attempts whose values it was given
    started: float = dataclasses.field(default_factory=time.monotonic)
    failed: bool = False  # Ray could not run it (worker/node died, object lost...)
    cancelled: bool = False


class Submitter:
    """Builds and sends the Ray calls of one runner (one flow run)."""

    def __init__(self, defaults: Mapping[str, Any]) -> None:
        self.defaults = dict(defaults)
        self._shared: dict[tuple[Any, ...], tuple[Any, Any, tuple[str, Any]]] = {}
        self._remotes: OrderedDict[str, Any] = OrderedDict()
        # (fn, its options, the call site's options) by identity -> remote: the
        # runs of a map share one lookup (the objects are held so ids stay theirs)
        self._bound: dict[tuple[int, int, int], tuple[Any, Any, Any, Any]] = {}
        self._lock = threading.Lock()

    def plan(self, call: TaskRunCall, future: RayFuture) -> Plan:
        upstreams: list[RayFuture] = []
        parameters = _with_placeholders(call.parameters, upstreams)
        wait_for = _with_placeholders(call.wait_for, upstreams) if call.wait_for else None
        return Plan(
            call=call,
            future=future,
            parameters=parameters,
            wait_for=wait_for,
            upstreams=upstreams,
            remote=self._remote_for(call),
            shared=self._shared_payload(call),
        )

    def send(self, plan: Plan, number: int) -> Attempt:
        """Submit one attempt of `plan` to Ray with its upstreams' current values.
        `number` > 1 is a retry: the worker then asks the server (Retrying)."""
        args, consumed = [], []
        for upstream in plan.upstreams:
            arg, attempt = _upstream_argument(upstream)
            args.append(arg)
            if attempt is not None:
                consumed.append(attempt)
        key, shared = plan.shared
        head = [key, shared, _spec(plan, number - 1)]
        if not isinstance(shared, bytes):  # an ObjectRef: a top-level argument
            head[1] = None
            args.insert(0, shared)
        try:
            state_ref, value_ref = plan.remote.remote(head, *args)
        except Exception as exc:
            raise _unpicklable(plan.call, exc) from exc
        attempt = Attempt(plan, number, state_ref, value_ref, consumed)
        plan.future.current = attempt
        return attempt

    # caches --------------------------------------------------------------------
    def _shared_payload(self, call: TaskRunCall) -> tuple[str, Any]:
        key = (id(call.task), id(call.settings), call.flow_run_id, call.flow_name, call.log_prints)
        found = self._shared.get(key)
        if found is not None:
            return found[2]
        with self._lock:
            found = self._shared.get(key)
            if found is None:
                # the task and settings are held so their ids stay theirs
                found = (call.task, call.settings, (uuid.uuid4().hex, _pickled_payload(call)))
                self._shared[key] = found
        return found[2]

    def _remote_for(self, call: TaskRunCall) -> Any:
        fn = call.task.fn
        fn_options, site_options = function_options(fn), current_options()
        key = (id(fn), id(fn_options), id(site_options))
        bound = self._bound.get(key)
        if bound is not None:
            return bound[3]
        remote = self._remote_with(merged_options(self.defaults, fn), call.task.name)
        with self._lock:
            if len(self._bound) >= _OPTIONS_CACHE_SIZE:
                self._bound.clear()
            self._bound[key] = (fn, fn_options, site_options, remote)
        return remote

    def _remote_with(self, options: dict[str, Any], task_name: str) -> Any:
        options.setdefault("name", f"prefray:{task_name}")
        key = repr(sorted(options.items()))
        with self._lock:
            remote = self._remotes.get(key)
            if remote is not None:
                self._remotes.move_to_end(key)
                return remote
        try:
            remote = remote_execute().options(**options, num_returns=2, max_retries=0)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"Task {task_name!r}: Ray refused its remote options {options}: {exc}"
            ) from exc
        with self._lock:
            self._remotes[key] = remote
            while len(self._remotes) > _OPTIONS_CACHE_SIZE:
                self._remotes.popitem(last=False)
        return remote

    def clear(self) -> None:
        with self._lock:
            self._shared.clear()
            self._remotes.clear()
            self._bound.clear()


def _pickled_payload(call: TaskRunCall) -> Any:
    """(task, settings) pickled once: inline bytes if small, else an ObjectRef."""
    import cloudpickle

    try:
        shared = Shared(call.task, call.settings, call.flow_run_id, call.flow_name, call.log_prints)
        payload = cloudpickle.dumps(shared)
    except Exception as exc:
        raise SerializationError(
            f"Task {call.task.name!r} cannot be sent to Ray workers: pickling the task "
            f"(its function and what it refers to) failed: {type(exc).__name__}: {exc}"
        ) from exc
    if len(payload) <= _INLINE_PAYLOAD_BYTES:
        return payload
    import ray

    return ray.put(payload)


def _with_placeholders(expr: Any, upstreams: list[RayFuture]) -> Any:
    """`expr` with each RayFuture replaced by an `Upstream` placeholder."""
    if isinstance(expr, dict) and all(isinstance(v, _SCALARS) for v in expr.values()):
        return expr  # the common case of a map over plain values: nothing to look at

    def visit(item: Any) -> Any:
        if isinstance(item, RayFuture):
            upstreams.append(item)
            return Upstream(len(upstreams) - 1, item.task_run_id)
        return item

    return visit_collection(expr, visit)


def _upstream_argument(future: RayFuture) -> tuple[Any, Attempt | None]:
    """The top-level argument for an upstream: its value's ObjectRef, or, when it
    ended without a value, its final state (the downstream becomes NotReady)."""
    attempt: Attempt | None = future.current
    if future.is_final():
        state = future.wait_state(0)
        if state is not None and not state.is_completed():
            return NotCompleted(state), None
    if attempt is None:  # a future from elsewhere that never ran on Ray here
        return NotCompleted(future.wait_state()), None
    return attempt.value_ref, attempt


def _spec(plan: Plan, run_count: int) -> list[Any]:
    call = plan.call
    return encode_spec(
        call.task_run,
        plan.parameters,
        plan.wait_for,
        [f.task_run_id for f in plan.upstreams],
        call.dynamic_index,
        run_count,
    )


def _unpicklable(call: TaskRunCall, exc: Exception) -> Exception:
    """A SerializationError naming the task and the parameter that cannot travel."""
    import cloudpickle

    for name, value in call.parameters.items():
        try:
            cloudpickle.dumps(_without_futures(value))
        except Exception as inner:
            return SerializationError(
                f"Task {call.task.name!r}: parameter {name!r} cannot be pickled to send it to "
                f"a Ray worker ({type(inner).__name__}: {inner}). Pass something picklable, "
                f"or create the object inside the task."
            )
    return SerializationError(
        f"Task {call.task.name!r}: Ray could not submit task run {call.task_run.name!r}: "
        f"{type(exc).__name__}: {exc}"
    )


def _without_futures(value: Any) -> Any:
    def visit(item: Any) -> Any:
        return None if isinstance(item, PrefrayFuture) else item

    return visit_collection(value, visit)
