"""Autonomous task runs: submit to the queue, claim (task servers), renew, release."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Response, status
from pydantic import Field, TypeAdapter

from prefray.schemas import ClaimedTaskRun, LeaseRenewal, TaskRun, TaskRunClaim, TaskRunSubmit
from prefray.server.api._common import DB, json_response, lock_rows
from prefray.server.database import task_queue as store

__all__ = ["MAX_SUBMIT", "router"]

MAX_SUBMIT = 50_000
router = APIRouter(prefix="/api/task_queue", tags=["task queue"])

_RUNS = TypeAdapter(list[TaskRun])
_CLAIMED = TypeAdapter(list[ClaimedTaskRun])
_IDS = TypeAdapter(list[uuid.UUID])


@router.post("/submit", response_model=list[TaskRun], status_code=status.HTTP_201_CREATED)
async def submit_task_runs(
    body: Annotated[list[TaskRunSubmit], Body(), Field(max_length=MAX_SUBMIT)], db: DB
) -> Response:
    """Create autonomous task runs (Scheduled) and queue them for task servers."""
    try:
        async with db.write() as conn:
            runs = await store.submit(conn, db.dialect, body)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return json_response(_RUNS, runs, 201)


@router.post("/claim", response_model=list[ClaimedTaskRun])
async def claim_task_runs(body: TaskRunClaim, db: DB) -> Response:
    """Atomically take up to `limit` queued runs: each is given to one caller only."""
    async with db.write() as conn:
        claimed = await store.claim(conn, body, lock_rows=lock_rows(db))
    return json_response(_CLAIMED, claimed)


@router.post("/renew", response_model=list[uuid.UUID])
async def renew_leases(body: LeaseRenewal, db: DB) -> Response:
    """Extend the caller's leases; answers the ids it still holds."""
    async with db.write() as conn:
        held = await store.renew(conn, body)
    return json_response(_IDS, held)


@router.post("/release", response_model=list[uuid.UUID])
async def release_leases(body: LeaseRenewal, db: DB) -> Response:
    """End the caller's leases now; unfinished runs are queued again."""
    async with db.write() as conn:
        released = await store.release(conn, body)
    return json_response(_IDS, released)
