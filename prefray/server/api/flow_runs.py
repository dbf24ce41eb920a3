"""Flow-run routes: create, read, filter, set state, history, resume, run input."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Response, status
from pydantic import TypeAdapter

from prefray.exceptions import ObjectNotFound
from prefray.schemas import (
    FlowRun,
    FlowRunCreate,
    FlowRunFilter,
    OrchestrationResult,
    ResumeRequest,
    SetStateRequest,
)
from prefray.server.api._common import DB, json_response, lock_rows
from prefray.server.api._runs import read_run, read_run_states, run_not_found, set_run_state
from prefray.server.database import flow_runs as store
from prefray.server.database.transitions import FLOW_RUNS
from prefray.states import State

__all__ = ["router"]

router = APIRouter(prefix="/api/flow_runs", tags=["flow runs"])

_RUN = TypeAdapter(FlowRun)
_RUNS = TypeAdapter(list[FlowRun])
_RESULT = TypeAdapter(OrchestrationResult)


@router.post(
    "/",
    response_model=FlowRun,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "a run with this client id already existed"}},
)
async def create_flow_run(body: FlowRunCreate, db: DB) -> Response:
    """Create a flow run (and its flow); replaying a client `id` returns the stored run."""
    async with db.write() as conn:
        run, created = await store.create_flow_run(conn, db.dialect, body)
    return json_response(_RUN, run, 201 if created else 200)


@router.post("/filter", response_model=list[FlowRun])
async def read_flow_runs(db: DB, body: FlowRunFilter | None = None) -> Response:
    async with db.read() as conn:
        runs = await store.read_flow_runs(conn, db.dialect, body or FlowRunFilter())
    return json_response(_RUNS, runs)


@router.get("/{id}", response_model=FlowRun)
async def read_flow_run(id: uuid.UUID, db: DB) -> Response:
    return await read_run(db, FLOW_RUNS, store.read_flow_run, _RUN, id)


@router.post("/{id}/set_state", response_model=OrchestrationResult)
async def set_flow_run_state(id: uuid.UUID, body: SetStateRequest, db: DB) -> Response:
    return await set_run_state(db, FLOW_RUNS, id, body)


@router.get("/{id}/states", response_model=list[State])
async def read_flow_run_states(id: uuid.UUID, db: DB) -> Response:
    return await read_run_states(db, FLOW_RUNS, store.read_flow_run, id)


@router.post("/{id}/resume", response_model=OrchestrationResult)
async def resume_flow_run(id: uuid.UUID, body: ResumeRequest, db: DB) -> Response:
    """Resume a paused run (REJECT with a reason when it is not paused)."""
    async with db.write() as conn:
        result = await store.resume_flow_run(
            conn, db.dialect, id, body.run_input, lock_rows=lock_rows(db)
        )
    if result is None:
        raise run_not_found(FLOW_RUNS, id)
    return json_response(_RESULT, result)


@router.get("/{id}/input/{key}")
async def read_flow_run_input(id: uuid.UUID, key: str, db: DB) -> dict[str, Any]:
    """`{"flow_run_id", "key", "value"}`: input stored by resume (key: the pause_key, else
    "run_input")."""
    async with db.read() as conn:
        if await store.read_flow_run(conn, id) is None:
            raise run_not_found(FLOW_RUNS, id)
        stored = await store.read_run_input(conn, id, key)
    if stored is None:
        raise ObjectNotFound(f"flow run {id} has no input {key!r}")
    return stored
