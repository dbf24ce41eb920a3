"""Task calls in a flow: `__call__`, `.submit()` and `.map()` become task runs.

Creating a task run never waits for the API on the default path: `__call__`
and `.submit()` queue the create on the batched state reporter; `.map()` over
N items creates its N task runs in one bulk request. Outside a flow,
`__call__` runs an autonomous task run (recorded, with no flow run), as
Prefect 2.20 does; `.submit()` and `.map()` queue autonomous runs for task
servers (`prefray.engine.autonomous`). Inside a task run,
calling another task runs its function directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prefray.context import FlowRunContext, TagsContext, TaskRunContext
from prefray.engine.book import RunBook
from prefray.engine.call import TaskRunCall
from prefray.engine.mapping import expand_map_parameters
from prefray.engine.task_run import run_task
from prefray.engine.upstream import upstream_ids
from prefray.futures import DoneFuture, PrefrayFuture
from prefray.schemas import TaskRunCreate, TaskRunInput
from prefray.settings import get_current_settings
from prefray.states import State
from prefray.utilities.callables import get_call_parameters
from prefray.utilities.ids import uuid4
from prefray.utilities.models import construct

if TYPE_CHECKING:
    from prefray.tasks import Task

__all__ = ["call_task", "map_task", "submit_task"]


def call_task(task: Task, args: tuple, kwargs: dict, wait_for: Any, return_state: bool) -> Any:
    """`task(...)`: run now, in this thread; the value (or the state)."""
    flow_ctx = FlowRunContext.get()
    if flow_ctx is None:
        if TaskRunContext.get() is not None:
            return task.fn(*args, **kwargs)
        return _run_autonomous(task, args, kwargs, wait_for, return_state)
    parameters = get_call_parameters(task.fn, args, kwargs)
    book = _book(flow_ctx)
    call, prior, _ = _prepare(task, parameters, wait_for, flow_ctx, book)
    state = prior or run_task(call)
    book.record(
        DoneFuture(call.task_run.id, state, call.task_run.name), task.task_key, _index(call)
    )
    return state if return_state else state.result()


def submit_task(task: Task, args: tuple, kwargs: dict, wait_for: Any) -> PrefrayFuture:
    """`task.submit(...)`: hand the run to the flow's task runner; a future.
    Outside any flow or task run: queue an autonomous run for a task server."""
    if _autonomous_here():
        from prefray.engine.autonomous import submit_autonomous

        return submit_autonomous(task, args, kwargs, wait_for)
    flow_ctx = _require_flow("submit", task)
    parameters = get_call_parameters(task.fn, args, kwargs)
    book = _book(flow_ctx)
    call, prior, create = _prepare(task, parameters, wait_for, flow_ctx, book, queue_create=False)
    if prior is None:
        _queue_create(create, flow_ctx.task_runner)
    future = _submit_or_done(flow_ctx, call, prior)
    book.record(future, task.task_key, _index(call))
    return future


def map_task(task: Task, args: tuple, kwargs: dict, wait_for: Any) -> list[PrefrayFuture]:
    """`task.map(...)`: one task run per item, created in bulk; futures.
    Outside any flow or task run: queue autonomous runs for task servers."""
    if _autonomous_here():
        from prefray.engine.autonomous import map_autonomous

        return list(map_autonomous(task, args, kwargs, wait_for))
    flow_ctx = _require_flow("map", task)
    parameters = get_call_parameters(task.fn, args, kwargs)
    per_run = expand_map_parameters(task.fn, parameters)
    book = _book(flow_ctx)
    indices = book.next_indices(task.task_key, len(per_run))
    prepared = [
        _prepare(task, p, wait_for, flow_ctx, book, index=i, queue_create=False)
        for p, i in zip(per_run, indices, strict=True)
    ]
    _create_in_bulk([create for call, prior, create in prepared if prior is None])
    futures = []
    for (call, prior, _), index in zip(prepared, indices, strict=True):
        future = _submit_or_done(flow_ctx, call, prior)
        book.record(future, task.task_key, index)
        futures.append(future)
    return futures


# building calls --------------------------------------------------------------
def _prepare(
    task: Task,
    parameters: dict[str, Any],
    wait_for: Any,
    flow_ctx: FlowRunContext,
    book: RunBook,
    index: int | None = None,
    queue_create: bool = True,
) -> tuple[TaskRunCall, State | None, TaskRunCreate]:
    """The call for one task run, the state an earlier attempt already reached,
    and the run's creation (queued here with `queue_create` unless it has a prior)."""
    if index is None:
        index = book.next_index(task.task_key)
    flow_run = flow_ctx.flow_run
    assert flow_run is not None
    create = _task_run_create(task, parameters, wait_for, flow_run.id, book.dynamic_key(index))
    call = TaskRunCall(
        task=task,
        task_run=create.to_run(),
        parameters=parameters,
        settings=flow_ctx.settings,
        wait_for=_as_list(wait_for),
        flow_run_id=flow_run.id,
        flow_name=flow_run.flow_name,
        log_prints=flow_ctx.log_prints,
    )
    call.dynamic_index = index
    call.limited_tags = _limited_tags(flow_ctx, create.tags)
    prior = book.prior(task.task_key, index)
    if prior is None and queue_create:
        _reporter().create_task_run(create)
    return call, prior, create


def _task_run_create(
    task: Task, parameters: dict[str, Any], wait_for: Any, flow_run_id: Any, dynamic_key: str
) -> TaskRunCreate:
    inputs = {
        name: [TaskRunInput(id=i) for i in ids] for name, ids in upstream_ids(parameters).items()
    }
    waits = upstream_ids({"wait_for": wait_for}) if wait_for else {}
    for name, ids in waits.items():
        inputs[name] = [TaskRunInput(id=i) for i in ids]
    return construct(
        TaskRunCreate,
        id=uuid4(),
        name=task.run_name(parameters, dynamic_key),
        flow_run_id=flow_run_id,
        task_key=task.task_key,
        dynamic_key=dynamic_key,
        cache_key=None,
        cache_expiration=None,
        tags=_tags(task),
        task_inputs=inputs,
        empirical_policy=task.empirical_policy,
        state=None,  # the server starts every run Pending: one State less per run
    )


def _tags(task: Task) -> list[str]:
    ctx = TagsContext.get()
    if ctx is None or not ctx.current_tags:
        return list(task.tags)
    return sorted(set(task.tags) | ctx.current_tags)


def _create_in_bulk(creates: list[TaskRunCreate]) -> None:
    """Queue the creations together: the reporter sends them in bulk requests
    (one per batch), off the critical path, before any state of these runs."""
    if creates:
        _reporter().create_task_runs(creates, defer=True)


def _queue_create(create: TaskRunCreate, runner: Any) -> None:
    """A submitted run's creation. Where the runner reports the run's first state
    from this process as soon as it starts, and the run has no upstream to wait
    for, it is held until that report, so both reach the API as one item even
    when the run starts on another thread (a pool thread). Otherwise it is sent
    now, so the API shows the run (Pending, with its inputs) while it waits."""
    if create.task_inputs or not getattr(runner, "reports_here", False):
        _reporter().create_task_run(create)
    else:
        _reporter().create_task_runs([create], defer=True)


# handing calls over ------------------------------------------------------------
def _submit_or_done(flow_ctx: FlowRunContext, call: TaskRunCall, prior: State | None) -> Any:
    if prior is not None:
        return DoneFuture(call.task_run.id, prior, call.task_run.name)
    return flow_ctx.task_runner.submit(call)


def _run_autonomous(task: Task, args: tuple, kwargs: dict, wait_for: Any, return_state: bool):
    parameters = get_call_parameters(task.fn, args, kwargs)
    settings = _settings_with_api()
    create = _task_run_create(task, parameters, wait_for, None, uuid4().hex)
    reporter = _reporter()
    reporter.create_task_run(create)
    call = TaskRunCall(
        task=task,
        task_run=create.to_run(),
        parameters=parameters,
        settings=settings,
        wait_for=_as_list(wait_for),
    )
    try:
        state = run_task(call)
    finally:
        reporter.flush(settings.api_request_timeout)
    return state if return_state else state.result()


def _settings_with_api() -> Any:
    from prefray.client import get_client

    with get_client(sync_client=True):  # starts the embedded API when there is none
        pass
    return get_current_settings()


def _autonomous_here() -> bool:
    return FlowRunContext.get() is None and TaskRunContext.get() is None


def _limited_tags(flow_ctx: FlowRunContext, tags: list[str]) -> frozenset[str] | None:
    """The tags with a concurrency limit, fetched once per flow run (at its first
    tagged task run; runs without tags never need them)."""
    if not tags:
        return None
    known = flow_ctx.extra.get("limited_tags")
    if known is None:
        from prefray.engine.concurrency import fetch_limited_tags

        known = flow_ctx.extra["limited_tags"] = fetch_limited_tags(flow_ctx.settings)
    return known


def _require_flow(method: str, task: Task) -> FlowRunContext:
    flow_ctx = FlowRunContext.get()
    if flow_ctx is None:
        raise RuntimeError(
            f"Task {task.name!r}: .{method}() needs a flow run, and none is running here. "
            f"Call it inside a @flow function, or call the task directly (task(...)) "
            f"to run it once outside a flow."
        )
    return flow_ctx


def _book(flow_ctx: FlowRunContext) -> RunBook:
    return flow_ctx.extra["book"]


def _index(call: TaskRunCall) -> int:
    return call.dynamic_index or 0


def _as_list(wait_for: Any) -> list[Any] | None:
    if wait_for is None:
        return None
    if isinstance(wait_for, (list, tuple, set)):
        return list(wait_for)
    if isinstance(wait_for, Iterable) and not isinstance(wait_for, (str, bytes)):
        return list(wait_for)
    return [wait_for]


def _reporter() -> Any:
    from prefray.engine.reporting import get_state_reporter

    return get_state_reporter()
