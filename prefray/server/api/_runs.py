"""What the flow-run and task-run routes share: reading one run, proposing a state
to it, and reading its state history, for either kind of run (`RunTables`)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic_core
from fastapi import Response
from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncConnection

from prefray.exceptions import ObjectNotFound
from prefray.schemas import SetStateRequest
from prefray.server.api._common import json_response, lock_rows
from prefray.server.database import Database
from prefray.server.database.queries import read_states
from prefray.server.database.transitions import Proposal, RunTables, apply_proposals_json
from prefray.states import State

__all__ = ["ReadRun", "read_run", "read_run_states", "run_not_found", "set_run_state"]

# the storage layer's `read_flow_run` / `read_task_run`: the run, or None
ReadRun = Callable[[AsyncConnection, uuid.UUID], Awaitable[Any]]

_STATES = TypeAdapter(list[State])


def run_not_found(tables: RunTables, run_id: uuid.UUID) -> ObjectNotFound:
    return ObjectNotFound(f"{tables.label} {run_id} not found")


async def read_run(
    db: Database, tables: RunTables, read: ReadRun, adapter: TypeAdapter[Any], run_id: uuid.UUID
) -> Response:
    async with db.read() as conn:
        run = await read(conn, run_id)
    if run is None:
        raise run_not_found(tables, run_id)
    return json_response(adapter, run)


async def set_run_state(
    db: Database, tables: RunTables, run_id: uuid.UUID, body: SetStateRequest
) -> Response:
    async with db.write() as conn:
        [result] = await apply_proposals_json(
            conn,
            tables,
            [Proposal(run_id, body.state, body.force)],
            lock_rows=lock_rows(db),
            last=True,  # nothing follows in this transaction
        )
    if result is None:
        raise run_not_found(tables, run_id)
    # the result's JSON form, as `OrchestrationResult` dumps it (no model built for it)
    return Response(pydantic_core.to_json(result), media_type="application/json")


async def read_run_states(
    db: Database, tables: RunTables, read: ReadRun, run_id: uuid.UUID
) -> Response:
    async with db.read() as conn:
        if await read(conn, run_id) is None:
            raise run_not_found(tables, run_id)
        states = await read_states(conn, tables.history, tables.fk, run_id)
    return json_response(_STATES, states)
