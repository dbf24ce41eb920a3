"""Pausing, suspending and resuming flow runs.

    pause_flow_run     the run goes Paused; this process blocks (polling the API)
                       until the run is resumed, or fails it with FlowPauseTimeout
    suspend_flow_run   the run goes Suspended and this process leaves the flow
                       (PausedRun); resume reschedules it and a fresh process
                       (a worker) runs the body again, reusing completed task runs
    resume_flow_run    Paused -> Running, Suspended -> Scheduled("Resuming")

A pause is identified by its key (given, or "pause-N"/"suspend-N" for the N-th
call in this attempt of the body). A key fires once per flow run: a retried or
rescheduled body that reaches it again does not pause, it gets the input the
resume stored. With `wait_for_input` (a pydantic model, or any type, which is
wrapped as `{"value": ...}`) the input's JSON schema travels in the Paused
state; the server refuses a resume whose input is missing or does not match.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from typing import Any

from pydantic import BaseModel, create_model

from prefray.context import FlowRunContext
from prefray.exceptions import (
    CancelledRun,
    FailedRun,
    FlowPauseTimeout,
    InvalidRunInput,
    NotPausedError,
    ObjectNotFound,
    PausedRun,
)
from prefray.schemas import SetStateStatus
from prefray.states import Completed, Paused, State, StateType, Suspended, now

__all__ = [
    "FlowRunCancelledWhilePaused",
    "GatedTaskRunner",
    "pause_flow_run",
    "resume_flow_run",
    "suspend_flow_run",
]

# the title of the model that wraps a non-model `wait_for_input` type as {"value": ...}
_VALUE_INPUT = "PrefrayValueInput"


class FlowRunCancelledWhilePaused(CancelledRun):
    """The run was cancelled while its body waited in pause_flow_run."""


class SuspendedRun(PausedRun):
    """Raised through the flow body so the engine leaves it; carries the Suspended state."""

    def __init__(self, message: str, state: State) -> None:
        super().__init__(message)
        self.state = state


class GatedTaskRunner:
    """The flow's task runner as its body sees it: a submission waits while the
    run is paused, so no task run starts between a pause and its resume."""

    def __init__(self, runner: Any, gate: threading.Event) -> None:
        self._runner = runner
        self._gate = gate
        self.reports_here = getattr(runner, "reports_here", False)  # read per submission

    def submit(self, call: Any) -> Any:
        if not self._gate.is_set():  # (is_set: no lock taken on the common path)
            self._gate.wait()
        return self._runner.submit(call)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)


# pause -----------------------------------------------------------------------------
def pause_flow_run(
    wait_for_input: Any = None,
    timeout: float = 3600,
    poll_interval: float = 2.0,
    key: str | None = None,
) -> Any:
    """Pause the current flow run until it is resumed (`resume_flow_run`, or
    `prefray flow-run resume ID`); the input given at resume with `wait_for_input`.

    >>> approval = pause_flow_run(wait_for_input=Approval, timeout=600)

    Raises FlowPauseTimeout after `timeout` seconds without a resume (the run
    then ends Failed unless the flow catches it).
    """
    ctx = _flow_context("pause_flow_run")
    key = key or _default_key(ctx, "pause")
    model = _input_model(wait_for_input)
    run_id = ctx.flow_run.id
    with _client() as client:
        if _already_fired(client, run_id, key):
            return _stored_input(client, run_id, key, model)
        _flush_reports(ctx)
        deadline = now() + dt.timedelta(seconds=timeout)
        state = Paused(pause_timeout=deadline, pause_key=key, run_input_schema=_schema(model))
        _propose(client, run_id, state)
        _log(ctx, "Paused flow run (key %r); resume it with `prefray flow-run resume %s`", key)
        gate = ctx.extra.get("pause_gate")
        if gate is not None:
            gate.clear()
        try:
            _wait_until_resumed(client, run_id, deadline, poll_interval, timeout)
        finally:
            if gate is not None:
                gate.set()
        _log(ctx, "Resumed flow run (key %r)", key)
        return _stored_input(client, run_id, key, model)


def _wait_until_resumed(
    client: Any, run_id: uuid.UUID, deadline: dt.datetime, poll_interval: float, timeout: float
) -> None:
    while True:
        state = client.read_flow_run(run_id).state
        if state is None or state.is_running():
            return
        if state.is_paused():
            if state.state_details.pause_reschedule:  # suspended from elsewhere meanwhile
                raise SuspendedRun(f"flow run {run_id} was suspended while paused", state)
            left = (deadline - now()).total_seconds()
            if left <= 0:
                raise FlowPauseTimeout(
                    f"Flow run {run_id} was paused and never resumed "
                    f"(timed out after {timeout:g} seconds)."
                )
            time.sleep(min(poll_interval, left))
            continue
        if state.type in (StateType.CANCELLING, StateType.CANCELLED):
            raise FlowRunCancelledWhilePaused(f"flow run {run_id} was cancelled while paused")
        raise FailedRun(f"flow run {run_id} left Paused for {state.name} instead of resuming")


# suspend ---------------------------------------------------------------------------
def suspend_flow_run(
    wait_for_input: Any = None,
    flow_run_id: uuid.UUID | str | None = None,
    timeout: float = 3600,
    key: str | None = None,
) -> Any:
    """Suspend a flow run: it goes Suspended and its process leaves the flow.

    Inside the flow (no `flow_run_id`): task runs already running finish, the
    results of completed ones are persisted, and the body stops here. When the
    run is resumed it is rescheduled, and the process that runs it again (a
    worker, or `python -m prefray.engine ID`) reruns the body: completed task
    runs are not executed again, and this call returns the resume's input.

    With `flow_run_id` (from another process): the run goes Suspended; its
    process leaves the flow at its next task submission or pause.
    """
    ctx = FlowRunContext.get()
    own_run = ctx is not None and ctx.flow_run is not None
    if flow_run_id is not None and not (own_run and str(ctx.flow_run.id) == str(flow_run_id)):
        return _suspend_other(uuid.UUID(str(flow_run_id)), wait_for_input, timeout, key)
    ctx = _flow_context("suspend_flow_run")
    key = key or _default_key(ctx, "suspend")
    model = _input_model(wait_for_input)
    run_id = ctx.flow_run.id
    with _client() as client:
        if _already_fired(client, run_id, key):
            return _stored_input(client, run_id, key, model)
        _finish_running_tasks(ctx, client)
        state = _suspended_state(key, timeout, model)
        state.state_details.transition_id = uuid.uuid4()
        _propose(client, run_id, state)
    _log(ctx, "Suspended flow run (key %r); resuming it reschedules it", key)
    raise SuspendedRun(f"flow run {run_id} was suspended (key {key!r})", state)


def _suspend_other(run_id: uuid.UUID, wait_for_input: Any, timeout: float, key: str | None) -> None:
    state = _suspended_state(key or f"suspend-{uuid.uuid4().hex[:8]}", timeout, None)
    state.state_details.run_input_schema = _schema(_input_model(wait_for_input))
    with _client() as client:
        _propose(client, run_id, state)


def _suspended_state(key: str, timeout: float, model: type[BaseModel] | None) -> State:
    return Suspended(
        pause_timeout=now() + dt.timedelta(seconds=timeout),
        pause_key=key,
        pause_reschedule=True,
        run_input_schema=_schema(model),
    )


def _finish_running_tasks(ctx: FlowRunContext, client: Any) -> None:
    """Wait for the body's task runs, and persist completed results that were kept
    only in memory, so that the rerun after resume can reuse them."""
    from prefray.results import persist_result

    book = ctx.extra.get("book")
    futures = list(book.futures) if book is not None else []
    gate = ctx.extra.get("pause_gate")
    if gate is not None:
        gate.clear()  # nothing new starts while the suspension is recorded
    states = [(future, future.wait_state()) for future in futures]
    _flush_reports(ctx)
    for future, state in states:
        if state is None or not state.is_completed() or state.data is not None:
            continue
        if state.state_details.untrackable_result:
            continue
        reference = persist_result(state.result())
        kept = Completed(name=state.name, message=state.message, data=reference)
        client.set_task_run_state(future.task_run_id, kept, force=True)


# resume ----------------------------------------------------------------------------
def resume_flow_run(flow_run_id: uuid.UUID | str, run_input: Any = None) -> None:
    """Resume a paused or suspended flow run, with the input its pause waits for.

    `run_input`: a dict, or a pydantic model instance; for a pause that waits for
    a plain type (`wait_for_input=int`), the value itself. Raises NotPausedError
    if the run is not paused, FlowPauseTimeout if its pause timed out, and
    InvalidRunInput if the input is missing or invalid.
    """
    run_id = uuid.UUID(str(flow_run_id))
    with _client() as client:
        flow_run = client.read_flow_run(run_id)
        state = flow_run.state
        if state is None or not state.is_paused():
            label = state.name if state is not None else "no state"
            raise NotPausedError(f"Cannot resume flow run {run_id}: it is not paused ({label}).")
        timeout = state.state_details.pause_timeout
        if timeout is not None and timeout < now():
            raise FlowPauseTimeout(f"Flow run {run_id} was paused until {timeout} and timed out.")
        payload = _input_payload(run_input, state.state_details.run_input_schema)
        result = client.resume_flow_run(run_id, run_input=payload)
    if result.status == SetStateStatus.ACCEPT:
        return
    if result.state is not None and result.state.is_paused():
        raise InvalidRunInput(f"Cannot resume flow run {run_id}: {result.reason}")
    raise NotPausedError(f"Cannot resume flow run {run_id}: {result.reason}")


def _input_payload(run_input: Any, schema: dict[str, Any] | None) -> dict[str, Any] | None:
    if isinstance(run_input, BaseModel):
        run_input = run_input.model_dump(mode="json")
    if run_input is None or schema is None or schema.get("title") != _VALUE_INPUT:
        return run_input
    if isinstance(run_input, dict) and set(run_input) == {"value"}:
        return run_input
    return {"value": run_input}


# helpers ---------------------------------------------------------------------------
def _flow_context(what: str) -> FlowRunContext:
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        raise RuntimeError(
            f"{what}() must be called inside a running flow; to pause or suspend "
            "another run by id use suspend_flow_run(flow_run_id=...)."
        )
    return ctx


def _default_key(ctx: FlowRunContext, kind: str) -> str:
    book = ctx.extra.get("book")
    index = book.next_index(f"\0{kind}") if book is not None else 0
    return f"{kind}-{index + 1}"


def _input_model(wait_for_input: Any) -> type[BaseModel] | None:
    if wait_for_input is None:
        return None
    if isinstance(wait_for_input, type) and issubclass(wait_for_input, BaseModel):
        return wait_for_input
    return create_model(_VALUE_INPUT, value=(wait_for_input, ...))


def _schema(model: type[BaseModel] | None) -> dict[str, Any] | None:
    return model.model_json_schema() if model is not None else None


def _already_fired(client: Any, run_id: uuid.UUID, key: str) -> bool:
    return any(
        state.type == StateType.PAUSED and state.state_details.pause_key == key
        for state in client.read_flow_run_states(run_id)
    )


def _stored_input(client: Any, run_id: uuid.UUID, key: str, model: type[BaseModel] | None) -> Any:
    if model is None:
        return None
    try:
        stored = client.read_flow_run_input(run_id, key)
    except ObjectNotFound:
        raise InvalidRunInput(
            f"flow run {run_id} was resumed without the input its pause {key!r} waits for"
        ) from None
    value = model.model_validate(stored["value"])
    return value.value if model.__name__ == _VALUE_INPUT else value  # type: ignore[attr-defined]


def _propose(client: Any, run_id: uuid.UUID, state: State) -> None:
    result = client.set_flow_run_state(run_id, state)
    if result.status != SetStateStatus.ACCEPT:
        raise RuntimeError(f"flow run {run_id} could not be {state.name}: {result.reason}")


def _flush_reports(ctx: FlowRunContext) -> None:
    from prefray.engine.reporting import get_state_reporter

    get_state_reporter().flush(ctx.settings.api_request_timeout)


def _client() -> Any:
    from prefray.client import get_client

    return get_client(sync_client=True)


def _log(ctx: FlowRunContext, message: str, key: str) -> None:
    from prefray.logging import get_run_logger

    args = (key, ctx.flow_run.id) if message.count("%") == 2 else (key,)
    get_run_logger().info(message, *args)
