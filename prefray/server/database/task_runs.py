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
from prefray.schemas import EmpiricalPolicy, TaskRun, TaskRunCreate, TaskRunFilter
from prefray.server.database.fastpath import plain_write
from prefray.server.database.fastsql import Codec, codec_for, iso_json, json_text
from prefray.server.database.queries import run_filter_clauses, run_page
from prefray.server.database.transitions import FLOW_RUNS, TASK_RUNS, chunks
from prefray.server.database.wire import WireState, state_json
from prefray.server.orchestration import RunSnapshot, RunUpdates, orchestrate
from prefray.states import State, StateDetails, StateType, now

__all__ = ["create_task_runs", "create_task_runs_json", "read_task_run", "read_task_runs"]

_RUNS = TASK_RUNS.run
_EMPTY = RunSnapshot(kind="task", state=None)


async def read_task_run(conn: AsyncConnection, run_id: uuid.UUID) -> TaskRun | None:
    row = (await conn.execute(sa.select(_RUNS).where(_RUNS.c.id == run_id))).first()
    return TaskRun.model_validate(row._asdict()) if row is not None else None


async def create_task_runs(
    conn: AsyncConnection, dialect: str, items: Sequence[TaskRunCreate]
) -> list[tuple[TaskRun, bool]]:
    """Create task runs in request order; each with whether it was new (False: a replay)."""
    created = await create_task_runs_json(conn, dialect, items)
    return [(TaskRun.model_validate(run), new) for run, new in created]


async def create_task_runs_json(
    conn: AsyncConnection, dialect: str, items: Sequence[Any]
) -> list[tuple[dict[str, Any], bool]]:
    """`create_task_runs` answering each `TaskRun` as a dict that serializes to its JSON
    (`pydantic_core.to_json`). `items` are `TaskRunCreate`s or their wire twins."""
    await _check_flow_runs_exist(conn, items)
    codec = codec_for(dialect)
    when = now()
    prepared = [
        _row(codec, item, when + dt.timedelta(microseconds=i)) for i, item in enumerate(items)
    ]
    inserted = set(
        await codec.insert_ignore_returning(
            conn, _RUNS.name, _COLUMNS, [values for _, values, _ in prepared], "id"
        )
    )
    new_flags: list[bool] = []
    for _run, values, _ in prepared:
        new_flags.append(values[0] in inserted)
        inserted.discard(values[0])  # a repeated id later in the request is a replay
    history = [history for (_, _, history), new in zip(prepared, new_flags, strict=True) if new]
    await codec.insert_many(conn, TASK_RUNS.history.name, _HISTORY_COLUMNS, history)
    replays = [run for (run, _, _), new in zip(prepared, new_flags, strict=True) if not new]
    existing = await _existing_rows(replays, conn)
    return [
        (run, True) if new else (existing[_identity(run)].model_dump(mode="json"), False)
        for (run, _, _), new in zip(prepared, new_flags, strict=True)
    ]


# the stored columns of a new task run, in the order `_row` gives their values
_COLUMNS = (
    "id", "name", "flow_run_id", "task_key", "dynamic_key", "cache_key", "cache_expiration",
    "tags", "task_inputs", "empirical_policy", "state", "state_type", "state_name",
    "run_count", "expected_start_time", "start_time", "end_time", "total_run_time",
    "created", "updated",
)  # fmt: skip
_HISTORY_COLUMNS = ("task_run_id", "type", "name", "timestamp", "transition_id", "state")
_DEFAULT_POLICY = EmpiricalPolicy().model_dump(mode="json")


def _row(
    codec: Codec, item: Any, created: dt.datetime
) -> tuple[dict[str, Any], tuple[Any, ...], tuple[Any, ...]]:
    """A new run: its `TaskRun` JSON, its column values, its first history row."""
    run_id = item.id or uuid.uuid4()
    if item.state is None:
        as_json, updates = _pending(run_id, item.flow_run_id), _EMPTY_UPDATES
        state_type, timestamp = StateType.PENDING, now()
        transition_id = expected = None
    else:
        state, updates = _initial(run_id, item, created)
        as_json = state.model_dump(mode="json")
        state_type, timestamp = state.type, state.timestamp
        transition_id, expected = state.state_details.transition_id, _scheduled(state)
    as_json["timestamp"] = iso_json(timestamp) if item.state is None else as_json["timestamp"]
    expected = expected or timestamp
    policy = item.empirical_policy.model_dump(mode="json")
    task_inputs = {k: [i.model_dump(mode="json") for i in v] for k, v in item.task_inputs.items()}
    run: dict[str, Any] = {
        "id": run_id,
        "name": item.name,
        "flow_run_id": item.flow_run_id,
        "task_key": item.task_key,
        "dynamic_key": item.dynamic_key,
        "cache_key": item.cache_key,
        "cache_expiration": item.cache_expiration,
        "tags": item.tags,
        "task_inputs": task_inputs,
        "empirical_policy": policy,
        "state": as_json,
        "state_type": state_type.value,
        "state_name": as_json["name"],
        "run_count": updates.run_count,
        "expected_start_time": expected,
        "start_time": updates.start_time,
        "end_time": updates.end_time,
        "total_run_time": updates.total_run_time,
        "created": created,
        "updated": created,
    }
    key, state_text, stamp = codec.uuid(run_id), codec.json(as_json), codec.ts(created)
    values = (
        key, item.name, codec.uuid(item.flow_run_id), item.task_key, item.dynamic_key,
        item.cache_key, codec.ts(item.cache_expiration),
        codec.json(item.tags) if item.tags else "[]",
        codec.json(task_inputs) if task_inputs else "{}",
        _POLICY_TEXT if policy == _DEFAULT_POLICY else codec.json(policy),
        state_text, state_type.value, as_json["name"], updates.run_count,
        codec.ts(expected), codec.ts(updates.start_time),
        codec.ts(updates.end_time), updates.total_run_time, stamp, stamp,
    )  # fmt: skip
    history = (
        key, state_type.value, as_json["name"], codec.ts(timestamp),
        codec.uuid(transition_id), state_text,
    )  # fmt: skip
    return run, values, history


_POLICY_TEXT = json_text(_DEFAULT_POLICY)
_EMPTY_UPDATES = RunUpdates(run_count=0, start_time=None, end_time=None, total_run_time=0.0)
# a new run's default first state, as `Pending()` dumps it; `_pending` fills in the rest
_PENDING = state_json(WireState(type=StateType.PENDING))
_DETAILS = StateDetails().model_dump(mode="json")
# no rule applies to a new run's Pending, and it changes no run field but the state
assert plain_write("task", None, WireState(type=StateType.PENDING), force=False, slots=None)


def _pending(run_id: uuid.UUID, flow_run_id: uuid.UUID | None) -> dict[str, Any]:
    """`Pending()` for a new run in JSON form, timestamp left for the caller."""
    details = dict(_DETAILS)
    details["task_run_id"] = str(run_id)
    details["flow_run_id"] = str(flow_run_id) if flow_run_id is not None else None
    as_json = dict(_PENDING)
    as_json["id"] = str(uuid.uuid4())
    as_json["state_details"] = details
    return as_json


def _initial(run_id: uuid.UUID, item: Any, created: dt.datetime) -> tuple[State, RunUpdates]:
    state = item.state
    if not isinstance(state, State):
        state = State.model_validate(state_json(state))
    state.state_details.task_run_id = run_id
    if state.state_details.flow_run_id is None:
        state.state_details.flow_run_id = item.flow_run_id
    decision = orchestrate(_EMPTY, state, now=created)
    assert decision.new_state is not None and decision.updates is not None
    return decision.new_state, decision.updates


def _scheduled(state: State) -> dt.datetime | None:
    scheduled = state.state_details.scheduled_time
    return scheduled if state.type == StateType.SCHEDULED else None


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
    where = run_filter_clauses(dialect, _RUNS, flt)
    if flt.flow_run_id is not None:
        where.append(c.flow_run_id == flt.flow_run_id)
    if flt.task_key is not None:
        where.append(c.task_key == flt.task_key)
    query = run_page(_RUNS, where, flt)
    return [TaskRun.model_validate(row._asdict()) for row in await conn.execute(query)]
