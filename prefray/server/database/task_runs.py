"""Storage for task runs: bulk upserting creation, reads and filters.

Creation is an upsert on `(flow_run_id, task_key, dynamic_key)` (and on the
client id): N task runs cost one existence check of their flow runs, one
multi-row `INSERT ... ON CONFLICT DO NOTHING RETURNING id`, one executemany
into the state history, and, only for replays, one lookup of the existing rows.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from prefray.exceptions import ObjectNotFound
from prefray.schemas import TaskRun, TaskRunCreate, TaskRunFilter
from prefray.server.database.queries import insert_ignore, json_array_contains_all, sort_clause
from prefray.server.database.transitions import (
    FLOW_RUNS,
    TASK_RUNS,
    chunks,
    history_row,
    run_state_columns,
)
from prefray.server.orchestration import RunSnapshot, orchestrate
from prefray.states import Pending, State, now

__all__ = ["create_task_runs", "read_task_run", "read_task_runs"]

_RUNS = TASK_RUNS.run
_EMPTY = RunSnapshot(kind="task", state=None)


async def read_task_run(conn: AsyncConnection, run_id: uuid.UUID) -> TaskRun | None:
    row = (await conn.execute(sa.select(_RUNS).where(_RUNS.c.id == run_id))).first()
    return TaskRun.model_validate(row._asdict()) if row is not None else None


async def create_task_runs(
    conn: AsyncConnection, dialect: str, items: Sequence[TaskRunCreate]
) -> list[tuple[TaskRun, bool]]:
    """Create task runs in request order; each with whether it was new (False: a replay)."""
    await _check_flow_runs_exist(conn, items)
    when = now()
    prepared = [_row(item, when + dt.timedelta(microseconds=i)) for i, item in enumerate(items)]
    rows = [row for row, _ in prepared]
    inserted: set[uuid.UUID] = set()
    for chunk in chunks(rows, 2_000):
        result = await conn.execute(insert_ignore(dialect, _RUNS).returning(_RUNS.c.id), chunk)
        inserted.update(result.scalars())
    new_flags: list[bool] = []
    for row in rows:
        new_flags.append(row["id"] in inserted)
        inserted.discard(row["id"])  # a repeated id later in the request is a replay
    history = [
        history_row(TASK_RUNS, row["id"], state)
        for (row, state), new in zip(prepared, new_flags, strict=True)
        if new
    ]
    if history:
        await conn.execute(sa.insert(TASK_RUNS.history), history)
    replays = [row for row, new in zip(rows, new_flags, strict=True) if not new]
    existing = await _existing_rows(replays, conn)
    return [
        (TaskRun.model_validate(row), True) if new else (existing[_identity(row)], False)
        for row, new in zip(rows, new_flags, strict=True)
    ]


def _row(item: TaskRunCreate, created: dt.datetime) -> tuple[dict[str, Any], State]:
    run_id = item.id or uuid.uuid4()
    state = item.state or Pending()
    state.state_details.task_run_id = run_id
    if state.state_details.flow_run_id is None:
        state.state_details.flow_run_id = item.flow_run_id
    decision = orchestrate(_EMPTY, state, now=created)
    assert decision.new_state is not None and decision.updates is not None
    columns = run_state_columns(decision.new_state, decision.updates)
    columns.setdefault("expected_start_time", decision.new_state.timestamp)
    row = {
        "id": run_id,
        "name": item.name,
        "flow_run_id": item.flow_run_id,
        "task_key": item.task_key,
        "dynamic_key": item.dynamic_key,
        "cache_key": item.cache_key,
        "cache_expiration": item.cache_expiration,
        "tags": item.tags,
        "task_inputs": {
            k: [i.model_dump(mode="json") for i in v] for k, v in item.task_inputs.items()
        },
        "empirical_policy": item.empirical_policy.model_dump(mode="json"),
        "created": created,
        "updated": created,
        **columns,
    }
    return row, decision.new_state


def _identity(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["flow_run_id"], row["task_key"], row["dynamic_key"])


async def _existing_rows(
    replays: list[dict[str, Any]], conn: AsyncConnection
) -> dict[tuple[Any, ...], TaskRun]:
    """The stored rows for replayed creates, keyed by each request's identity.

    A replay matches by its client id if that exists, else by its
    (flow_run_id, task_key, dynamic_key).
    """
    if not replays:
        return {}
    c = _RUNS.c
    by_id: dict[uuid.UUID, TaskRun] = {}
    by_key: dict[tuple[Any, ...], TaskRun] = {}
    ids = [r["id"] for r in replays]
    keys = [_identity(r) for r in replays if r["flow_run_id"] is not None]
    for chunk in chunks(ids):
        for row in await conn.execute(sa.select(_RUNS).where(c.id.in_(chunk))):
            by_id[row.id] = TaskRun.model_validate(row._asdict())
    for chunk in chunks(keys, 1_000):
        query = sa.select(_RUNS).where(
            sa.tuple_(c.flow_run_id, c.task_key, c.dynamic_key).in_(chunk)
        )
        for row in await conn.execute(query):
            by_key[(row.flow_run_id, row.task_key, row.dynamic_key)] = TaskRun.model_validate(
                row._asdict()
            )
    out: dict[tuple[Any, ...], TaskRun] = {}
    for r in replays:
        found = by_id.get(r["id"]) or by_key.get(_identity(r))
        assert found is not None, f"task run {r['id']} neither inserted nor found"
        out[_identity(r)] = found
    return out


async def _check_flow_runs_exist(conn: AsyncConnection, items: Sequence[TaskRunCreate]) -> None:
    wanted = list({i.flow_run_id for i in items if i.flow_run_id is not None})
    found: set[uuid.UUID] = set()
    t = FLOW_RUNS.run
    for chunk in chunks(wanted):
        found.update((await conn.execute(sa.select(t.c.id).where(t.c.id.in_(chunk)))).scalars())
    missing = [i for i in wanted if i not in found]
    if missing:
        raise ObjectNotFound(f"flow run {missing[0]} not found")


async def read_task_runs(conn: AsyncConnection, dialect: str, flt: TaskRunFilter) -> list[TaskRun]:
    c = _RUNS.c
    where: list[Any] = []
    if flt.ids is not None:
        where.append(c.id.in_(flt.ids))
    if flt.flow_run_id is not None:
        where.append(c.flow_run_id == flt.flow_run_id)
    if flt.state_types is not None:
        where.append(c.state_type.in_([t.value for t in flt.state_types]))
    if flt.state_names is not None:
        where.append(c.state_name.in_(flt.state_names))
    if flt.name is not None:
        where.append(c.name.contains(flt.name, autoescape=True))
    if flt.task_key is not None:
        where.append(c.task_key == flt.task_key)
    if flt.tags:
        where.append(json_array_contains_all(dialect, c.tags, flt.tags))
    query = (
        sa.select(_RUNS)
        .where(*where)
        .order_by(*sort_clause(_RUNS, flt.sort))
        .limit(flt.limit)
        .offset(flt.offset)
    )
    return [TaskRun.model_validate(row._asdict()) for row in await conn.execute(query)]
