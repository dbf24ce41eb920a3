"""Task-run routes: create (one or bulk), read, filter, set state, batched state reports."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import pydantic_core
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import Field, TypeAdapter

from prefray.schemas import (
    OrchestrationResult,
    SetStateRequest,
    SetStateStatus,
    StateReport,
    TaskRun,
    TaskRunCreate,
    TaskRunFilter,
)
from prefray.server.api._common import DB, json_response, lock_rows
from prefray.server.api._runs import read_run, read_run_states, set_run_state
from prefray.server.database import task_runs as store
from prefray.server.database.plain_creates import parse_plain_creates
from prefray.server.database.transitions import TASK_RUNS, Proposal, apply_proposals_json
from prefray.server.database.wire import (
    MAX_BATCH,
    STATE_REPORTS,
    WireState,
    parse_body,
    wire_twin,
)
from prefray.states import State

__all__ = ["MAX_BATCH", "router"]

router = APIRouter(prefix="/api/task_runs", tags=["task runs"])

_RUN = TypeAdapter(TaskRun)
_RUNS = TypeAdapter(list[TaskRun])
# the creations' wire twin, the carried `states` light too
_WireTaskRunCreate = wire_twin(TaskRunCreate, {State: WireState, list[State]: list[WireState]})
TASK_RUN_CREATE: TypeAdapter[Any] = TypeAdapter(_WireTaskRunCreate)
TASK_RUN_CREATES: TypeAdapter[Any] = TypeAdapter(
    Annotated[list[_WireTaskRunCreate], Field(max_length=MAX_BATCH)]  # type: ignore[valid-type]
)


def _parse_creates(adapter: TypeAdapter[Any], body: bytes) -> Any:
    """Parse creations; carried `states` must be in time order (422 naming the one that
    is not): the server writes them as one history."""
    parsed = parse_body(adapter, body)
    for i, item in enumerate(parsed if isinstance(parsed, list) else [parsed]):
        states = item.states or ()
        for j in range(1, len(states)):
            if states[j].timestamp < states[j - 1].timestamp:
                loc = ("body", i, "states", j, "timestamp")
                if not isinstance(parsed, list):
                    loc = ("body", "states", j, "timestamp")
                message = "states must be in time order: this one is older than the one before"
                raise RequestValidationError(
                    [{"type": "value_error", "loc": loc, "msg": message, "input": None}]
                )
    return parsed


def _json(value: Any, status_code: int = 200) -> Response:
    # `value` holds only what pydantic serializes exactly as the response model would
    return Response(
        pydantic_core.to_json(value), status_code=status_code, media_type="application/json"
    )


def _body(model: type[Any], *, many: bool) -> dict[str, Any]:
    """The OpenAPI request body of a route that validates its body itself (fast, from
    bytes); the models it refers to are documented by the responses."""
    schema = TypeAdapter(model).json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    if many:
        schema = {"type": "array", "items": schema, "maxItems": MAX_BATCH}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


@router.post(
    "/",
    response_model=TaskRun,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "the task run already existed (a replay)"}},
    openapi_extra=_body(TaskRunCreate, many=False),
)
async def create_task_run(request: Request, db: DB) -> Response:
    """Create a task run; a replay (same id, or same flow run/task key/dynamic key) returns
    the stored one."""
    body = _parse_creates(TASK_RUN_CREATE, await request.body())
    async with db.write() as conn:
        [(run, created)] = await store.create_task_runs_json(conn, db.dialect, [body], last=True)
    return _json(run, 201 if created else 200)


# `?answer=minimal`: what a client that knows what it sent needs back
Answer = Annotated[
    Literal["full", "minimal"],
    Query(
        description="`full`: every run as stored. `minimal`: null for a run created "
        "exactly as sent (new, every carried state written with it), else the run as stored."
    ),
]
ReportAnswer = Annotated[
    Literal["full", "minimal"],
    Query(
        description="`full`: every result. `minimal`: null for a report accepted as "
        "proposed (ACCEPT, the state stored is the one sent), else its result."
    ),
]


@router.post(
    "/bulk",
    response_model=list[TaskRun | None],
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_body(TaskRunCreate, many=True),
)
async def create_task_runs(request: Request, db: DB, answer: Answer = "full") -> Response:
    """Create many task runs in one transaction; answers in request order."""
    raw = await request.body()
    minimal = answer == "minimal"
    # the usual items (as the reporter sends them) are read without models; any
    # other body is validated into them (the same rows, answers and errors)
    plain = parse_plain_creates(raw) if minimal else None
    if plain is not None:
        async with db.write() as conn:
            created = await store.create_plain_task_runs(
                conn, db.dialect, plain, lambda: _parse_creates(TASK_RUN_CREATES, raw), last=True
            )
        return _json([run for run, _ in created], 201)
    body = _parse_creates(TASK_RUN_CREATES, raw)
    async with db.write() as conn:
        created = await store.create_task_runs_json(
            conn, db.dialect, body, minimal=minimal, last=True
        )
    return _json([run for run, _ in created], 201)


@router.post("/filter", response_model=list[TaskRun])
async def read_task_runs(db: DB, body: TaskRunFilter | None = None) -> Response:
    async with db.read() as conn:
        runs = await store.read_task_runs(conn, db.dialect, body or TaskRunFilter())
    return json_response(_RUNS, runs)


@router.post(
    "/states",
    response_model=list[OrchestrationResult | None],
    openapi_extra=_body(StateReport, many=True),
)
async def report_task_run_states(
    request: Request, db: DB, answer: ReportAnswer = "full"
) -> Response:
    """Apply N state reports in order; an unknown task run gets ABORT, the rest proceed."""
    body = parse_body(STATE_REPORTS, await request.body())
    proposals = [Proposal(r.task_run_id, r.state, r.force) for r in body]
    async with db.write() as conn:
        results = await apply_proposals_json(
            conn, TASK_RUNS, proposals, lock_rows=lock_rows(db), last=True
        )
    answers = [
        result
        if result is not None
        else {
            "status": SetStateStatus.ABORT.value,
            "state": None,
            "reason": f"task run {report.task_run_id} not found",
            "delay_seconds": None,
        }
        for report, result in zip(body, results, strict=True)
    ]
    if answer == "minimal":
        answers = [
            None if _accepted_as_sent(report, result) else result
            for report, result in zip(body, answers, strict=True)
        ]
    return _json(answers)


def _accepted_as_sent(report: Any, result: dict[str, Any]) -> bool:
    state = result["state"]
    return (
        result["status"] == SetStateStatus.ACCEPT.value
        and state is not None
        and state["id"] == str(report.state.id)
    )


@router.get("/{id}", response_model=TaskRun)
async def read_task_run(id: uuid.UUID, db: DB) -> Response:
    return await read_run(db, TASK_RUNS, store.read_task_run, _RUN, id)


@router.post("/{id}/set_state", response_model=OrchestrationResult)
async def set_task_run_state(id: uuid.UUID, body: SetStateRequest, db: DB) -> Response:
    return await set_run_state(db, TASK_RUNS, id, body)


@router.get("/{id}/states", response_model=list[State])
async def read_task_run_states(id: uuid.UUID, db: DB) -> Response:
    return await read_run_states(db, TASK_RUNS, store.read_task_run, id)
