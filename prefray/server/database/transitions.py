"""Apply state proposals to runs: load in one query, decide in memory, write in bulk.

This is the hot path for batched task-run state reports: N reports cost a
handful of statements (load the runs, load the transition ids already seen,
an executemany UPDATE of the run rows, an executemany INSERT into the
history), whatever N is. Reports are applied in request order, so several
reports for the same run in one batch chain as if sent one by one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from prefray.schemas import EmpiricalPolicy, OrchestrationResult
from prefray.server.database.concurrency import SlotBook
from prefray.server.database.models import (
    FlowRunORM,
    FlowRunStateORM,
    TaskRunORM,
    TaskRunStateORM,
)
from prefray.server.orchestration import RunKind, RunSnapshot, RunUpdates, orchestrate
from prefray.states import State, StateType, now

__all__ = [
    "FLOW_RUNS",
    "TASK_RUNS",
    "Proposal",
    "RunTables",
    "apply_proposals",
    "history_row",
    "run_state_columns",
]

# bound parameters per IN (...) list: well under SQLite's and asyncpg's limits
_CHUNK = 5_000


@dataclasses.dataclass(frozen=True)
class RunTables:
    kind: RunKind
    run: sa.Table
    history: sa.Table
    fk: str  # the history table's column naming the run
    label: str  # "flow run" / "task run", for messages


FLOW_RUNS = RunTables(
    "flow", FlowRunORM.__table__, FlowRunStateORM.__table__, "flow_run_id", "flow run"
)
TASK_RUNS = RunTables(
    "task", TaskRunORM.__table__, TaskRunStateORM.__table__, "task_run_id", "task run"
)


@dataclasses.dataclass(frozen=True)
class Proposal:
    run_id: uuid.UUID
    state: State
    force: bool = False


@dataclasses.dataclass
class _LiveRun:
    snapshot: RunSnapshot
    flow_run_id: uuid.UUID | None
    seen: set[uuid.UUID]
    updates: RunUpdates | None = None


def chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def apply_proposals(
    conn: AsyncConnection,
    tables: RunTables,
    proposals: Sequence[Proposal],
    *,
    lock_rows: bool,
) -> list[OrchestrationResult | None]:
    """Orchestrate every proposal in order; None where the run does not exist."""
    run_ids = list(dict.fromkeys(p.run_id for p in proposals))
    live = await _load_runs(conn, tables, run_ids, lock_rows)
    await _load_seen(conn, tables, proposals, live)
    slots = None
    if tables.kind == "task":  # tag concurrency slots, taken/freed with the states
        slots = await SlotBook.load(conn, proposals, live, lock_rows=lock_rows)
    when = now()
    results: list[OrchestrationResult | None] = []
    history: list[dict[str, Any]] = []
    for proposal in proposals:
        run = live.get(proposal.run_id)
        if run is None:
            results.append(None)
            continue
        _fill_ids(tables, proposal, run)
        cached = await _cached_state(conn, proposal.state, when) if tables.kind == "task" else None
        decision = orchestrate(
            run.snapshot,
            proposal.state,
            force=proposal.force,
            now=when,
            cached=cached,
            slots=slots.counts_for(proposal.run_id) if slots is not None else None,
        )
        results.append(decision.result)
        if decision.new_state is not None and decision.updates is not None:
            history.append(history_row(tables, proposal.run_id, decision.new_state))
            if slots is not None:
                slots.track(proposal.run_id, decision.new_state)
            _advance(run, decision.new_state, decision.updates)
    await _write(conn, tables, live, history, when)
    if slots is not None:
        await slots.write(conn, when)
    return results


def history_row(tables: RunTables, run_id: uuid.UUID, state: State) -> dict[str, Any]:
    return {
        tables.fk: run_id,
        "type": state.type.value,
        "name": state.name,
        "timestamp": state.timestamp,
        "transition_id": state.state_details.transition_id,
        "state": state.model_dump(mode="json"),
    }


def run_state_columns(state: State, updates: RunUpdates) -> dict[str, Any]:
    """The run-row columns that follow from writing `state` with `updates`."""
    values: dict[str, Any] = {
        "state": state.model_dump(mode="json"),
        "state_type": state.type.value,
        "state_name": state.name,
        "run_count": updates.run_count,
        "start_time": updates.start_time,
        "end_time": updates.end_time,
        "total_run_time": updates.total_run_time,
    }
    if state.type == StateType.SCHEDULED and state.state_details.scheduled_time is not None:
        values["expected_start_time"] = state.state_details.scheduled_time
    return values


async def _load_runs(
    conn: AsyncConnection, tables: RunTables, run_ids: list[uuid.UUID], lock_rows: bool
) -> dict[uuid.UUID, _LiveRun]:
    t = tables.run
    flow_run_col = t.c.flow_run_id if tables.kind == "task" else sa.null()
    cols = [
        t.c.id,
        t.c.state,
        t.c.run_count,
        t.c.empirical_policy,
        t.c.start_time,
        t.c.end_time,
        t.c.total_run_time,
        flow_run_col.label("flow_run_id"),
    ]
    live: dict[uuid.UUID, _LiveRun] = {}
    for chunk in chunks(sorted(run_ids)):
        query = sa.select(*cols).where(t.c.id.in_(chunk))
        if lock_rows:
            # id order: two batches touching the same runs never deadlock
            query = query.order_by(t.c.id).with_for_update()
        for row in await conn.execute(query):
            snapshot = RunSnapshot(
                kind=tables.kind,
                state=State.model_validate(row.state) if row.state else None,
                run_count=row.run_count,
                empirical_policy=EmpiricalPolicy.model_validate(row.empirical_policy or {}),
                start_time=row.start_time,
                end_time=row.end_time,
                total_run_time=row.total_run_time,
            )
            live[row.id] = _LiveRun(snapshot, row.flow_run_id, set())
    return live


async def _load_seen(
    conn: AsyncConnection,
    tables: RunTables,
    proposals: Sequence[Proposal],
    live: dict[uuid.UUID, _LiveRun],
) -> None:
    transition_ids = list(
        {
            p.state.state_details.transition_id
            for p in proposals
            if p.state.state_details.transition_id is not None and p.run_id in live
        }
    )
    h = tables.history
    fk = h.c[tables.fk]
    for chunk in chunks(transition_ids):
        query = sa.select(fk, h.c.transition_id).where(h.c.transition_id.in_(chunk))
        for run_id, transition_id in await conn.execute(query):
            if run_id in live:
                live[run_id].seen.add(transition_id)
    for run in live.values():
        if run.seen:
            run.snapshot = dataclasses.replace(
                run.snapshot, seen_transition_ids=frozenset(run.seen)
            )


def _fill_ids(tables: RunTables, proposal: Proposal, run: _LiveRun) -> None:
    details = proposal.state.state_details
    if tables.kind == "task":
        details.task_run_id = proposal.run_id
        if details.flow_run_id is None:
            details.flow_run_id = run.flow_run_id
    else:
        details.flow_run_id = proposal.run_id


async def _cached_state(conn: AsyncConnection, proposed: State, when: dt.datetime) -> State | None:
    details = proposed.state_details
    if proposed.type != StateType.RUNNING or not details.cache_key or details.refresh_cache:
        return None
    t = TaskRunORM.__table__
    query = (
        sa.select(t.c.state)
        .where(
            t.c.cache_key == details.cache_key,
            t.c.state_type == StateType.COMPLETED.value,
            sa.or_(t.c.cache_expiration.is_(None), t.c.cache_expiration > when),
        )
        .order_by(t.c.end_time.desc())
        .limit(1)
    )
    row = (await conn.execute(query)).first()
    return State.model_validate(row.state) if row is not None and row.state else None


def _advance(run: _LiveRun, state: State, updates: RunUpdates) -> None:
    """Carry the run forward in memory so the next report in the batch sees it."""
    if state.state_details.transition_id is not None:
        run.seen.add(state.state_details.transition_id)
    run.snapshot = dataclasses.replace(
        run.snapshot,
        state=state,
        run_count=updates.run_count,
        start_time=updates.start_time,
        end_time=updates.end_time,
        total_run_time=updates.total_run_time,
        seen_transition_ids=frozenset(run.seen),
    )
    if run.updates is not None and run.updates.record_cache_key and not updates.record_cache_key:
        updates = dataclasses.replace(
            updates,
            cache_key=run.updates.cache_key,
            cache_expiration=run.updates.cache_expiration,
            record_cache_key=True,
        )
    run.updates = updates


async def _write(
    conn: AsyncConnection,
    tables: RunTables,
    live: dict[uuid.UUID, _LiveRun],
    history: list[dict[str, Any]],
    when: dt.datetime,
) -> None:
    if not history:
        return
    rows_plain: list[dict[str, Any]] = []
    rows_cached: list[dict[str, Any]] = []
    for run_id, run in live.items():
        if run.updates is None or run.snapshot.state is None:
            continue
        values = run_state_columns(run.snapshot.state, run.updates)
        values["_id"] = run_id
        values["updated"] = when
        if run.updates.record_cache_key:
            values["cache_key"] = run.updates.cache_key
            values["cache_expiration"] = run.updates.cache_expiration
            rows_cached.append(values)
        else:
            rows_plain.append(values)
    t = tables.run
    for rows in (rows_plain, rows_cached):
        # executemany needs the same keys in every row; split by key set
        for group in _group_by_keys(rows):
            await conn.execute(sa.update(t).where(t.c.id == sa.bindparam("_id")), group)
    await conn.execute(sa.insert(tables.history), history)


def _group_by_keys(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(frozenset(row), []).append(row)
    return list(groups.values())
