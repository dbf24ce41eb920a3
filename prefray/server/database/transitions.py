"""Apply state proposals to runs: load in one query, decide in memory, write in bulk.

This is the hot path for batched task-run state reports: N reports cost a
handful of statements (load the runs, load the transition ids already seen,
an executemany UPDATE of the run rows, an executemany INSERT into the
history), whatever N is. Reports are applied in request order, so several
reports for the same run in one batch chain as if sent one by one.

Per report the cost is kept to what the decision needs. Runs are loaded as
plain values (their state stays JSON text, parsed only if a rule must look
at it); a proposal the rules cannot change (`fastpath.plain_write`: the usual
Pending -> Running -> Completed) is written with its bookkeeping computed
directly; anything else goes through `orchestrate()` with full `State`s.
Values are encoded once for the driver (`fastsql`), not per row by
SQLAlchemy's type processors.
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
from prefray.server.database.fastpath import plain_write
from prefray.server.database.fastsql import Codec, codec_for
from prefray.server.database.models import (
    ConcurrencyLimitORM,
    FlowRunORM,
    FlowRunStateORM,
    TaskRunORM,
    TaskRunStateORM,
)
from prefray.server.database.onehop import executemany_together
from prefray.server.database.wire import state_json
from prefray.server.orchestration import (
    RunKind,
    RunSnapshot,
    RunUpdates,
    bookkeeping,
    orchestrate,
)
from prefray.states import State, StateType, now

__all__ = [
    "FLOW_RUNS",
    "TASK_RUNS",
    "Proposal",
    "RunTables",
    "apply_proposals",
    "apply_proposals_json",
    "history_row",
    "run_state_columns",
]

# bound parameters per IN (...) list: well under SQLite's and asyncpg's limits
_CHUNK = 5_000
_HISTORY_COLUMNS = ("type", "name", "timestamp", "transition_id", "state")


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
    # a `State`, or the hot routes' wire twin of it (`wire.WireState`)
    state: Any
    force: bool = False


@dataclasses.dataclass(slots=True)
class _Run:
    """A run as loaded, carried forward in memory through the batch."""

    key: Any  # the id as the driver stores it
    flow_run_id: uuid.UUID | None
    state_type: StateType | None
    timestamp: dt.datetime | None  # of the current state
    state_text: str | None  # the stored state JSON, parsed only on demand
    run_count: int
    start_time: dt.datetime | None
    end_time: dt.datetime | None
    total_run_time: float
    policy_text: str | None
    seen: set[uuid.UUID] = dataclasses.field(default_factory=set)
    parsed: State | None = None
    # set once a state is written in this batch
    written: Any = None  # the written state (State or wire twin), for its details
    written_json: dict[str, Any] | None = None
    written_text: str | None = None
    cache: RunUpdates | None = None  # the last write that recorded a cache key

    def state(self) -> State | None:
        if self.parsed is None:
            if self.written_json is not None:
                self.parsed = State.model_validate(self.written_json)
            elif self.state_text is not None:
                self.parsed = State.model_validate_json(self.state_text)
        return self.parsed

    def snapshot(self, kind: RunKind) -> RunSnapshot:
        policy = self.policy_text
        return RunSnapshot(
            kind=kind,
            state=self.state(),
            run_count=self.run_count,
            empirical_policy=EmpiricalPolicy.model_validate_json(policy or "{}"),
            start_time=self.start_time,
            end_time=self.end_time,
            total_run_time=self.total_run_time,
            seen_transition_ids=frozenset(self.seen),
        )

    def advance(self, state: Any, as_json: dict[str, Any], updates: RunUpdates) -> None:
        """Carry the run forward so the next report in the batch sees `state`."""
        transition_id = state.state_details.transition_id
        if transition_id is not None:
            self.seen.add(transition_id)
        self.state_type = state.type
        self.timestamp = state.timestamp
        self.parsed = state if isinstance(state, State) else None
        self.written, self.written_json = state, as_json
        self.run_count, self.start_time = updates.run_count, updates.start_time
        self.end_time, self.total_run_time = updates.end_time, updates.total_run_time
        if updates.record_cache_key:
            self.cache = updates


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
    answers = await apply_proposals_json(conn, tables, proposals, lock_rows=lock_rows)
    return [OrchestrationResult.model_validate(a) if a is not None else None for a in answers]


async def apply_proposals_json(
    conn: AsyncConnection,
    tables: RunTables,
    proposals: Sequence[Proposal],
    *,
    lock_rows: bool,
    last: bool = False,
) -> list[dict[str, Any] | None]:
    """`apply_proposals`, answering each `OrchestrationResult` in its JSON form.

    `last`: the caller's transaction ends (commits) right after this call, so its
    final writes may commit in the same trip to SQLite (`onehop.executemany_together`)."""
    codec = codec_for(conn.dialect.name)
    run_ids = list(dict.fromkeys(p.run_id for p in proposals))
    live, any_limits = await _load_runs(conn, codec, tables, run_ids, lock_rows)
    await _load_seen(conn, codec, tables, proposals, live)
    slots = None
    if any_limits and live:  # tag concurrency slots, taken/freed with the states
        slots = await SlotBook.load(conn, proposals, live, lock_rows=lock_rows)
    when = now()
    results: list[dict[str, Any] | None] = []
    history: list[tuple[Any, ...]] = []
    for proposal in proposals:
        run = live.get(proposal.run_id)
        if run is None:
            results.append(None)
            continue
        _fill_ids(tables, proposal, run)
        answer, written = await _decide(conn, tables, run, proposal, slots, when)
        results.append(answer)
        if written is not None:
            state, as_json = written
            history.append(_history_values(codec, run, state, as_json))
            if slots is not None:
                slots.track(proposal.run_id, state)
    await _write(conn, codec, tables, live, history, when, last=last and slots is None)
    if slots is not None:
        await slots.write(conn, when)
    return results


async def _decide(
    conn: AsyncConnection,
    tables: RunTables,
    run: _Run,
    proposal: Proposal,
    slots: SlotBook | None,
    when: dt.datetime,
) -> tuple[dict[str, Any], tuple[Any, dict[str, Any]] | None]:
    """The answer to one proposal, and the state written (with its JSON) if any."""
    proposed = proposal.state
    counts = slots.counts_for(proposal.run_id) if slots is not None else None
    repeated = proposed.state_details.transition_id in run.seen
    if not repeated and plain_write(
        tables.kind, run.state_type, proposed, force=proposal.force, slots=counts
    ):
        as_json = state_json(proposed)
        updates = bookkeeping(
            run.state_type,
            run.timestamp,
            run.run_count,
            run.start_time,
            run.end_time,
            run.total_run_time,
            proposed,
        )
        run.advance(proposed, as_json, updates)
        answer = {"status": "ACCEPT", "state": as_json, "reason": None, "delay_seconds": None}
        return answer, (proposed, as_json)
    if not isinstance(proposed, State):
        proposed = State.model_validate(state_json(proposed))
    cached = await _cached_state(conn, proposed, when) if tables.kind == "task" else None
    decision = orchestrate(
        run.snapshot(tables.kind),
        proposed,
        force=proposal.force,
        now=when,
        cached=cached,
        slots=counts,
    )
    answer = decision.result.model_dump(mode="json")
    if decision.new_state is None or decision.updates is None:
        return answer, None
    as_json = answer["state"]
    run.advance(decision.new_state, as_json, decision.updates)
    return answer, (decision.new_state, as_json)


def history_row(tables: RunTables, run_id: uuid.UUID, state: State) -> dict[str, Any]:
    return {
        tables.fk: run_id,
        "type": state.type.value,
        "name": state.name,
        "timestamp": state.timestamp,
        "transition_id": state.state_details.transition_id,
        "state": state.model_dump(mode="json"),
    }


def _history_values(
    codec: Codec, run: _Run, state: Any, as_json: dict[str, Any]
) -> tuple[Any, ...]:
    """A history row, in `(fk, *_HISTORY_COLUMNS)` order, ready for the driver."""
    run.written_text = codec.json(as_json)  # the run row stores the same text
    return (
        run.key,
        state.type.value,
        as_json["name"],
        codec.ts(state.timestamp),
        codec.uuid(state.state_details.transition_id),
        run.written_text,
    )


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
    conn: AsyncConnection,
    codec: Codec,
    tables: RunTables,
    run_ids: list[uuid.UUID],
    lock_rows: bool,
) -> tuple[dict[uuid.UUID, _Run], bool]:
    """The runs, and (task runs only) whether any tag concurrency limit exists: asked
    in the same statement, so that the usual batch (no limits) needs no query of its
    own for them."""
    t = tables.run.name
    task = tables.kind == "task"
    flow_run = "flow_run_id" if task else "NULL"
    limits = f"EXISTS (SELECT 1 FROM {ConcurrencyLimitORM.__tablename__})" if task else "NULL"
    columns = (
        f"id, state_type, {codec.json_field('state', 'timestamp')}, {codec.as_text('state')}, "
        f"run_count, start_time, end_time, total_run_time, "
        f"{codec.as_text('empirical_policy')}, {flow_run}, {limits}"
    )
    by_key = {codec.uuid(run_id): run_id for run_id in run_ids}
    live: dict[uuid.UUID, _Run] = {}
    any_limits = False
    flow_run_ids: dict[Any, uuid.UUID | None] = {None: None}
    for chunk in chunks(sorted(by_key)):
        sql = f"SELECT {columns} FROM {t} WHERE id IN ({codec.params(len(chunk))})"
        if lock_rows:
            # id order: two batches touching the same runs never deadlock
            sql += " ORDER BY id FOR UPDATE"
        for row in await conn.exec_driver_sql(sql, tuple(chunk)):
            key, state_type, timestamp, text, count, start, end, total, policy, flow, lim = row
            any_limits = any_limits or bool(lim)
            if flow not in flow_run_ids:
                flow_run_ids[flow] = codec.uuid_out(flow)
            live[by_key[key]] = _Run(
                key=key,
                flow_run_id=flow_run_ids[flow],
                state_type=StateType(state_type) if state_type is not None else None,
                timestamp=dt.datetime.fromisoformat(timestamp) if timestamp else None,
                state_text=text,
                run_count=count,
                start_time=codec.ts_out(start),
                end_time=codec.ts_out(end),
                total_run_time=total,
                policy_text=policy,
            )
    return live, any_limits


async def _load_seen(
    conn: AsyncConnection,
    codec: Codec,
    tables: RunTables,
    proposals: Sequence[Proposal],
    live: dict[uuid.UUID, _Run],
) -> None:
    transition_ids = list(
        {
            p.state.state_details.transition_id
            for p in proposals
            if p.state.state_details.transition_id is not None and p.run_id in live
        }
    )
    if not transition_ids:
        return
    by_key = {run.key: run for run in live.values()}
    h = tables.history.name
    for chunk in chunks(transition_ids):
        sql = (
            f"SELECT {tables.fk}, transition_id FROM {h} "
            f"WHERE transition_id IN ({codec.params(len(chunk))})"
        )
        params = tuple(codec.uuid(i) for i in chunk)
        for key, transition_id in await conn.exec_driver_sql(sql, params):
            run = by_key.get(key)
            if run is not None:
                run.seen.add(codec.uuid_out(transition_id))  # type: ignore[arg-type]


def _fill_ids(tables: RunTables, proposal: Proposal, run: _Run) -> None:
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


async def _write(
    conn: AsyncConnection,
    codec: Codec,
    tables: RunTables,
    live: dict[uuid.UUID, _Run],
    history: list[tuple[Any, ...]],
    when: dt.datetime,
    *,
    last: bool,
) -> None:
    if not history:
        return
    updated = codec.ts(when)
    # executemany needs one statement per column set: the plain update, plus
    # expected_start_time for Scheduled states, plus the cache key when recorded
    groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    for run in live.values():
        state, as_json, text = run.written, run.written_json, run.written_text
        if state is None or as_json is None or text is None:
            continue
        columns = ["state", "state_type", "state_name", "run_count", "start_time", "end_time"]
        columns += ["total_run_time", "updated"]
        values = [
            text,
            state.type.value,
            as_json["name"],
            run.run_count,
            codec.ts(run.start_time),
            codec.ts(run.end_time),
            run.total_run_time,
            updated,
        ]
        scheduled = state.state_details.scheduled_time
        if state.type == StateType.SCHEDULED and scheduled is not None:
            columns.append("expected_start_time")
            values.append(codec.ts(scheduled))
        if run.cache is not None:
            columns += ["cache_key", "cache_expiration"]
            values += [run.cache.cache_key, codec.ts(run.cache.cache_expiration)]
        values.append(run.key)
        groups.setdefault(tuple(columns), []).append(tuple(values))
    t = tables.run.name
    statements: list[tuple[str, Sequence[Any]]] = []
    for columns, rows in groups.items():
        marks = codec.params(len(columns)).split(", ")
        sets = ", ".join(f"{c} = {p}" for c, p in zip(columns, marks, strict=True))
        where = codec.params(1, start=len(columns) + 1)
        statements.append((f"UPDATE {t} SET {sets} WHERE id = {where}", rows))
    columns = (tables.fk, *_HISTORY_COLUMNS)
    statements.append((codec.insert_sql(tables.history.name, columns), history))
    # one trip to aiosqlite's thread for all of them (one statement at a time elsewhere)
    await executemany_together(conn, statements, last=last)
