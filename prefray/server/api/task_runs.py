"""Task-run routes: create (one or bulk), read, filter, set state, batched state reports."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Response, status
from pydantic import Field, TypeAdapter

from prefray.exceptions import ObjectNotFound
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
from prefray.server.database import task_runs as store
from prefray.server.database.queries import read_states
from prefray.server.database.transitions import TASK_RUNS, Proposal, apply_proposals
from prefray.states import State

__all__ = ["MAX_BATCH", "router"]

MAX_BATCH = 50_000
router = APIRouter(prefix="/api/task_runs", tags=["task runs"])

_RUN = TypeAdapter(TaskRun)
_RUNS = TypeAdapter(list[TaskRun])
_RESULT = TypeAdapter(OrchestrationResult)
_RESULTS = TypeAdapter(list[OrchestrationResult])
_STATES = TypeAdapter(list[State])


def _not_found(run_id: uuid.UUID) -> ObjectNotFound:
    return ObjectNotFound(f"task run {run_id} not found")


@router.post(
    "/",
    response_model=TaskRun,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "the task run already existed (a replay)"}},
)
async def create_task_run(body: TaskRunCreate, db: DB) -> Response:
    """Create a task run; a replay (same id, or same flow run/task key/dynamic key) returns
    the stored one."""
    async with db.write() as conn:
        [(run, created)] = await store.create_task_runs(conn, db.dialect, [body])
    return json_response(_RUN, run, 201 if created else 200)


@router.post("/bulk", response_model=list[TaskRun], status_code=status.HTTP_201_CREATED)
async def create_task_runs(
    body: Annotated[list[TaskRunCreate], Body(), Field(max_length=MAX_BATCH)], db: DB
) -> Response:
    """Create many task runs in one transaction; answers in request order."""
    async with db.write() as conn:
        created = await store.create_task_runs(conn, db.dialect, body)
    return json_response(_RUNS, [run for run, _ in created], 201)


@router.post("/filter", response_model=list[TaskRun])
async def read_task_runs(db: DB, body: TaskRunFilter | None = None) -> Response:
    async with db.read() as conn:
        runs = await store.read_task_runs(conn, db.dialect, body or TaskRunFilter())
    return json_response(_RUNS, runs)


@router.post("/states", response_model=list[OrchestrationResult])
async def report_task_run_states(
    body: Annotated[list[StateReport], Body(), Field(max_length=MAX_BATCH)], db: DB
) -> Response:
    """Apply N state reports in order; an unknown task run gets ABORT, the rest proceed."""
    proposals = [Proposal(r.task_run_id, r.state, r.force) for r in body]
    async with db.write() as conn:
        results = await apply_proposals(conn, TASK_RUNS, proposals, lock_rows=lock_rows(db))
    answers = [
        result
        if result is not None
        else OrchestrationResult(
            status=SetStateStatus.ABORT, reason=f"task run {report.task_run_id} not found"
        )
        for report, result in zip(body, results, strict=True)
    ]
    return json_response(_RESULTS, answers)


@router.get("/{id}", response_model=TaskRun)
async def read_task_run(id: uuid.UUID, db: DB) -> Response:
    async with db.read() as conn:
        run = await store.read_task_run(conn, id)
    if run is None:
        raise _not_found(id)
    return json_response(_RUN, run)


@router.post("/{id}/set_state", response_model=OrchestrationResult)
async def set_task_run_state(id: uuid.UUID, body: SetStateRequest, db: DB) -> Response:
    async with db.write() as conn:
        [result] = await apply_proposals(
            conn, TASK_RUNS, [Proposal(id, body.state, body.force)], lock_rows=lock_rows(db)
        )
    if result is None:
        raise _not_found(id)
    return json_response(_RESULT, result)


@router.get("/{id}/states", response_model=list[State])
async def read_task_run_states(id: uuid.UUID, db: DB) -> Response:
    async with db.read() as conn:
        if await store.read_task_run(conn, id) is None:
            raise _not_found(id)
        states = await read_states(conn, TASK_RUNS.history, TASK_RUNS.fk, id)
    return json_response(_STATES, states)
