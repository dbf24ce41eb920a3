"""Every API call, described once as data: method, path, body, parser.

Both clients (`PrefrayClient`, `SyncPrefrayClient`) execute these specs through
their own tiny send function, so a call is written in one place only. Bodies
are serialized to JSON bytes here, in one pass by pydantic-core
(`TypeAdapter.dump_json`), and answers parsed straight from bytes
(`validate_json`): a bulk report of thousands of states never builds
per-item Python dicts.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Generic, Literal, TypeVar

from pydantic import TypeAdapter

from prefray.exceptions import InvalidRequest
from prefray.schemas import (
    FlowRun,
    FlowRunCreate,
    FlowRunFilter,
    Log,
    LogCreate,
    LogFilter,
    OrchestrationResult,
    ResumeRequest,
    SetStateRequest,
    StateReport,
    TaskRun,
    TaskRunCreate,
    TaskRunFilter,
)
from prefray.states import State

T = TypeVar("T")
M = TypeVar("M")

# The server accepts up to 50,000 items per bulk request; smaller chunks keep
# each body a few MB and under any proxy's body limit.
BULK_CHUNK_SIZE = 10_000

IdLike = uuid.UUID | str


@dataclasses.dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[bytes], T]
    body: bytes | None = None


def _concat(answers: list[Any]) -> list[Any]:
    return [item for answer in answers for item in answer]


@dataclasses.dataclass(frozen=True)
class Batch(Generic[T]):
    """Several calls sent in order; `combine` joins their answers into one."""

    calls: list[Call[Any]]
    combine: Callable[[list[Any]], T] = _concat


def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


_FLOW_RUN = _adapter(FlowRun)
_FLOW_RUNS = _adapter(list[FlowRun])
_TASK_RUN = _adapter(TaskRun)
_TASK_RUNS = _adapter(list[TaskRun])
_TASK_RUNS_OR_NONE = _adapter(list[TaskRun | None])
_RESULT = _adapter(OrchestrationResult)
_RESULTS = _adapter(list[OrchestrationResult])
_RESULTS_OR_NONE = _adapter(list[OrchestrationResult | None])
_STATES = _adapter(list[State])
_LOGS = _adapter(list[Log])
_TASK_RUN_CREATES = _adapter(list[TaskRunCreate])
_STATE_REPORTS = _adapter(list[StateReport])
_LOG_CREATES = _adapter(list[LogCreate])


def _json_fallback(value: Any) -> str:
    # Parameters are recorded for people to read; a value JSON cannot hold
    # (a numpy array, a custom object) is recorded by its repr, not refused.
    text = repr(value)
    return text if len(text) <= 1000 else text[:997] + "..."


def _dump(adapter: TypeAdapter[Any], value: Any) -> bytes:
    return adapter.dump_json(value, fallback=_json_fallback)


def _parse(adapter: TypeAdapter[Any]) -> Callable[[bytes], Any]:
    return adapter.validate_json


def _parse_json(content: bytes) -> Any:
    return json.loads(content) if content else None


def run_id(value: IdLike) -> uuid.UUID:
    """An id as a UUID; a malformed one is refused before any request is sent."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidRequest(
            f"{value!r} is not a valid run id: ids are UUIDs such as "
            "'0b6f7a8e-3c1d-4a2b-9e5f-1d2c3b4a5e6f'."
        ) from None


def _coerce(model: type[M], items: Sequence[Any]) -> list[M]:
    # Fast path: the engine passes models; dicts are validated once here.
    return [item if isinstance(item, model) else model.model_validate(item) for item in items]


def _chunked(path: str, adapter: TypeAdapter[Any], parse: Any, items: list[Any]) -> list[Call[Any]]:
    chunks = [items[i : i + BULK_CHUNK_SIZE] for i in range(0, len(items), BULK_CHUNK_SIZE)]
    # Unset optional fields are left out (None is every such field's default):
    # half the bytes and half the encoding time of a 10,000-report batch.
    return [
        Call("POST", path, parse, adapter.dump_json(chunk, exclude_none=True)) for chunk in chunks
    ]


def _sum_counts(answers: list[Any]) -> dict[str, int]:
    return {"count": sum(int(answer.get("count", 0)) for answer in answers if answer)}


# meta -------------------------------------------------------------------------
def health() -> Call[Any]:
    return Call("GET", "/api/health", _parse_json)


def version() -> Call[Any]:
    return Call("GET", "/api/version", _parse_json)


# flow runs --------------------------------------------------------------------
def create_flow_run(body: FlowRunCreate, parameters: dict[str, Any] | None) -> Call[FlowRun]:
    # Parameters may hold values JSON cannot (they are recorded by repr), so
    # they are set after validation rather than validated as JSON.
    body = body.model_copy(update={"parameters": dict(parameters or {})})
    return Call("POST", "/api/flow_runs/", _parse(_FLOW_RUN), _dump(_adapter(FlowRunCreate), body))


def read_flow_run(id: IdLike) -> Call[FlowRun]:
    return Call("GET", f"/api/flow_runs/{run_id(id)}", _parse(_FLOW_RUN))


def read_flow_runs(**filters: Any) -> Call[list[FlowRun]]:
    body = FlowRunFilter(**filters).model_dump_json().encode()
    return Call("POST", "/api/flow_runs/filter", _parse(_FLOW_RUNS), body)


def set_flow_run_state(id: IdLike, state: State, force: bool = False) -> Call[OrchestrationResult]:
    body = SetStateRequest(state=state, force=force).model_dump_json().encode()
    return Call("POST", f"/api/flow_runs/{run_id(id)}/set_state", _parse(_RESULT), body)


def read_flow_run_states(id: IdLike) -> Call[list[State]]:
    return Call("GET", f"/api/flow_runs/{run_id(id)}/states", _parse(_STATES))


def resume_flow_run(
    id: IdLike, run_input: dict[str, Any] | None = None
) -> Call[OrchestrationResult]:
    body = ResumeRequest(run_input=run_input).model_dump_json().encode()
    return Call("POST", f"/api/flow_runs/{run_id(id)}/resume", _parse(_RESULT), body)


def read_flow_run_input(id: IdLike, key: str) -> Call[Any]:
    return Call("GET", f"/api/flow_runs/{run_id(id)}/input/{key}", _parse_json)


# task runs --------------------------------------------------------------------
def _answered(
    path: str, answer: str, full: TypeAdapter[Any], minimal: TypeAdapter[Any]
) -> tuple[str, Callable[[bytes], Any]]:
    """A bulk route's path and answer parser for `answer` ("full" or "minimal": None
    for each item the server took exactly as sent)."""
    if answer == "minimal":
        return f"{path}?answer=minimal", _parse(minimal)
    if answer == "full":
        return path, _parse(full)
    raise InvalidRequest(f"answer must be 'full' or 'minimal', not {answer!r}")


def create_task_run(task_run: TaskRunCreate) -> Call[TaskRun]:
    body = _coerce(TaskRunCreate, [task_run])[0].model_dump_json().encode()
    return Call("POST", "/api/task_runs/", _parse(_TASK_RUN), body)


def create_task_runs(
    task_runs: Sequence[TaskRunCreate], answer: Literal["full", "minimal"] = "full"
) -> Batch[list[Any]]:
    """`answer="minimal"`: None for each run created exactly as sent (see the route)."""
    items = _coerce(TaskRunCreate, task_runs)
    path, parse = _answered("/api/task_runs/bulk", answer, _TASK_RUNS, _TASK_RUNS_OR_NONE)
    return Batch(_chunked(path, _TASK_RUN_CREATES, parse, items))


def read_task_run(id: IdLike) -> Call[TaskRun]:
    return Call("GET", f"/api/task_runs/{run_id(id)}", _parse(_TASK_RUN))


def read_task_runs(flow_run_id: IdLike | None = None, **filters: Any) -> Call[list[TaskRun]]:
    if flow_run_id is not None:
        filters["flow_run_id"] = run_id(flow_run_id)
    body = TaskRunFilter(**filters).model_dump_json().encode()
    return Call("POST", "/api/task_runs/filter", _parse(_TASK_RUNS), body)


def set_task_run_state(id: IdLike, state: State, force: bool = False) -> Call[OrchestrationResult]:
    body = SetStateRequest(state=state, force=force).model_dump_json().encode()
    return Call("POST", f"/api/task_runs/{run_id(id)}/set_state", _parse(_RESULT), body)


def report_task_run_states(
    reports: Sequence[StateReport], answer: Literal["full", "minimal"] = "full"
) -> Batch[list[Any]]:
    """`answer="minimal"`: None for each report accepted as proposed (see the route)."""
    items = _coerce(StateReport, reports)
    path, parse = _answered("/api/task_runs/states", answer, _RESULTS, _RESULTS_OR_NONE)
    return Batch(_chunked(path, _STATE_REPORTS, parse, items))


def read_task_run_states(id: IdLike) -> Call[list[State]]:
    return Call("GET", f"/api/task_runs/{run_id(id)}/states", _parse(_STATES))


# logs -------------------------------------------------------------------------
def create_logs(logs: Sequence[LogCreate]) -> Batch[dict[str, int]]:
    items = _coerce(LogCreate, logs)
    return Batch(_chunked("/api/logs/", _LOG_CREATES, _parse_json, items), _sum_counts)


def read_logs(
    flow_run_id: IdLike | None = None,
    task_run_id: IdLike | None = None,
    level_ge: int | None = None,
    limit: int = 1000,
    offset: int = 0,
) -> Call[list[Log]]:
    body = LogFilter(
        flow_run_id=run_id(flow_run_id) if flow_run_id is not None else None,
        task_run_id=run_id(task_run_id) if task_run_id is not None else None,
        level_ge=level_ge,
        limit=limit,
        offset=offset,
    )
    return Call("POST", "/api/logs/filter", _parse(_LOGS), body.model_dump_json().encode())
