"""Storage for task runs: bulk upserting creation, reads and filters.

Creation is an upsert on `(flow_run_id, task_key, dynamic_key)` (and on the
client id): N task runs cost one existence check of their flow runs, one
multi-row `INSERT ... ON CONFLICT DO NOTHING RETURNING id`, one executemany
into the state history, and, only for replays, one lookup of the existing rows.

A creation may carry the transitions that followed (`TaskRunCreate.states`: a
run created, run and finished within one batch of the reporter). When no rule
can intervene (each step accepted as proposed by the rules alone: no cache
key, no tag with a concurrency limit, no retry, no repeat) the run row is
inserted already in its final state, with the bookkeeping `orchestrate` would
have done, and all its history rows go in the same INSERT as everyone else's.
Otherwise, and for a replay of an existing run, the states are applied after
the insert through the normal path (`apply_proposals_json`), as if reported
one by one (a replay's transition ids are already seen: nothing is written).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pydantic_core
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from prefray.exceptions import ObjectNotFound
from prefray.schemas import EmpiricalPolicy, SetStateStatus, TaskRun, TaskRunCreate, TaskRunFilter
from prefray.server.database.fastpath import plain_write
from prefray.server.database.fastsql import Codec, codec_for
from prefray.server.database.models import ConcurrencyLimitORM
from prefray.server.database.onehop import executemany_together
from prefray.server.database.plain_creates import (
    EMPTY_UPDATES,
    POLICY_TEXT,
    NewPending,
    PlainCreate,
    plain_row,
)
from prefray.server.database.queries import run_filter_clauses, run_page
from prefray.server.database.transitions import (
    FLOW_RUNS,
    TASK_RUNS,
    Proposal,
    apply_proposals_json,
    chunks,
)
from prefray.server.database.wire import DEFAULT_STATE_NAMES, WireState, state_json, state_text
from prefray.server.orchestration import RunSnapshot, RunUpdates, bookkeeping, orchestrate
from prefray.states import State, StateType, now
from prefray.utilities.ids import uuid4

__all__ = [
    "create_plain_task_runs",
    "create_task_runs",
    "create_task_runs_json",
    "read_task_run",
    "read_task_runs",
]

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
    conn: AsyncConnection,
    dialect: str,
    items: Sequence[Any],
    *,
    minimal: bool = False,
    last: bool = False,
) -> list[tuple[dict[str, Any] | None, bool]]:
    """`create_task_runs` answering each `TaskRun` as a dict that serializes to its JSON
    (`pydantic_core.to_json`). `items` are `TaskRunCreate`s or their wire twins.

    With `minimal`, a run created exactly as sent (new, and its carried states, if
    any, all written with it) is answered None instead: the client knows it already.

    `last`: the caller's transaction commits right after this call; when nothing
    follows the history rows (no replay, no state applied later) the COMMIT goes to
    SQLite with them (`onehop.executemany_together`)."""
    await _check_flow_runs_exist(conn, [item.flow_run_id for item in items])
    codec = codec_for(dialect)
    when = now()
    limited = await _limited_tags(conn, items)
    prepared = [
        _row(codec, item, when + dt.timedelta(microseconds=i), limited)
        for i, item in enumerate(items)
    ]
    return await _store(conn, codec, prepared, lambda i: prepared[i], minimal=minimal, last=last)


async def create_plain_task_runs(
    conn: AsyncConnection,
    dialect: str,
    items: Sequence[PlainCreate],
    validated: Callable[[], Sequence[Any]],
    *,
    last: bool = False,
) -> list[tuple[dict[str, Any] | None, bool]]:
    """`create_task_runs_json(..., minimal=True)` for creations read by
    `plain_creates.parse_plain_creates`, with the same rows and answers.

    An item that needs more than the plain path offers (a rule could intervene in its
    states, a tag of it has a concurrency limit, it is a replay) is taken from
    `validated()`, the same body validated the usual way, and built as above."""
    await _check_flow_runs_exist(conn, _flow_run_uuids(items))
    codec = codec_for(dialect)
    when = now()
    limited = await _limited_tags(conn, items)
    models: list[Sequence[Any]] = []  # `validated()`, once asked for

    def validated_row(i: int) -> _Prepared:
        if not models:
            models.append(validated())
        return _row(codec, models[0][i], when + dt.timedelta(microseconds=i), limited)

    prepared: list[_Prepared] = []
    for i, stamp in enumerate(codec.ts_steps(when, len(items))):
        item = items[i]
        row = None
        if not (limited and item.states and not limited.isdisjoint(item.tags)):
            row = plain_row(codec, item, stamp)
        if row is None:
            prepared.append(validated_row(i))
        else:
            # written with all its states: nothing is left to apply after the insert
            prepared.append(_Prepared(row[0], row[1], [], True, None))

    def remade(i: int) -> _Prepared:
        p = prepared[i]
        return p if p.parts is not None else validated_row(i)

    return await _store(conn, codec, prepared, remade, minimal=True, last=last)


async def _store(
    conn: AsyncConnection,
    codec: Codec,
    prepared: list[_Prepared],
    remade: Callable[[int], _Prepared],
    *,
    minimal: bool,
    last: bool,
) -> list[tuple[dict[str, Any] | None, bool]]:
    """Insert the prepared runs and their history, in request order; a run not
    inserted (a replay) is answered as stored, its carried states applied after.
    `remade(i)`: run `i` as `_row` prepares it (for a replay of a run prepared
    otherwise)."""
    inserted = set(
        await codec.insert_ignore_returning(
            conn, _RUNS.name, _COLUMNS, [p.values for p in prepared], "id"
        )
    )
    new_flags: list[bool] = []
    for i, p in enumerate(prepared):
        new = p.values[0] in inserted
        new_flags.append(new)
        inserted.discard(p.values[0])  # a repeated id later in the request is a replay
        if not new:
            prepared[i] = remade(i)
    history = [row for p, new in zip(prepared, new_flags, strict=True) if new for row in p.history]
    later = any(
        p.states and not (new and p.coalesced) for p, new in zip(prepared, new_flags, strict=True)
    )
    if history:
        insert = codec.insert_sql(TASK_RUNS.history.name, _HISTORY_COLUMNS)
        final = last and not later and all(new_flags)  # nothing else to read or write
        await executemany_together(conn, [(insert, history)], last=final)
    replays = [p.run for p, new in zip(prepared, new_flags, strict=True) if not new]
    existing = await _existing_rows(replays, conn)
    answers: list[tuple[dict[str, Any] | None, bool]] = [
        (None, True)  # created exactly as sent: its JSON is not even made
        if new and minimal and (p.coalesced or not p.states)
        else (p.run, True)
        if new
        else (existing[_identity(p.run)].model_dump(mode="json"), False)
        for p, new in zip(prepared, new_flags, strict=True)
    ]
    return await _apply_later(conn, codec, prepared, new_flags, answers)


def _flow_run_uuids(items: Sequence[PlainCreate]) -> list[uuid.UUID]:
    # each distinct id once, in the order of first mention (as the validated items')
    texts = dict.fromkeys(item.flow_run_id for item in items if item.flow_run_id is not None)
    return [uuid.UUID(text) for text in texts]


async def _apply_later(
    conn: AsyncConnection,
    codec: Codec,
    prepared: list[_Prepared],
    new_flags: list[bool],
    answers: list[tuple[dict[str, Any] | None, bool]],
) -> list[tuple[dict[str, Any] | None, bool]]:
    """Apply the carried states that were not written with the run (a rule could
    intervene, or the run existed), in request order, and answer those runs as stored.

    The per-state answers are not returned: a client that needs them (a REJECT, a
    WAIT) sends such states as reports."""
    proposals: list[Proposal] = []
    for p, new, (run, _) in zip(prepared, new_flags, answers, strict=True):
        if p.states and not (new and p.coalesced):
            assert run is not None  # answered None only when created as sent
            run_id = uuid.UUID(str(run["id"]))
            proposals.extend(Proposal(run_id, state) for state in p.states)
    if not proposals:
        return answers
    await apply_proposals_json(conn, TASK_RUNS, proposals, lock_rows=not codec.sqlite)
    ids = list(dict.fromkeys(p.run_id for p in proposals))
    stored: dict[uuid.UUID, dict[str, Any]] = {}
    for chunk in chunks(ids):
        for row in await conn.execute(sa.select(_RUNS).where(_RUNS.c.id.in_(chunk))):
            stored[row.id] = TaskRun.model_validate(row._asdict()).model_dump(mode="json")
    return [
        (stored.get(uuid.UUID(str(run["id"])), run) if run is not None else None, new)
        for run, new in answers
    ]


async def _limited_tags(conn: AsyncConnection, items: Sequence[Any]) -> frozenset[str]:
    """The tags with a concurrency limit, looked up only when a creation carries both
    states and tags (a step into Running would take a slot: not written in one go)."""
    if not any(item.states and item.tags for item in items):
        return frozenset()
    t = ConcurrencyLimitORM.__table__
    return frozenset((await conn.execute(sa.select(t.c.tag))).scalars())


# the stored columns of a new task run, in the order `_row` gives their values
_COLUMNS = (
    "id", "name", "flow_run_id", "task_key", "dynamic_key", "cache_key", "cache_expiration",
    "tags", "task_inputs", "empirical_policy", "state", "state_type", "state_name",
    "run_count", "expected_start_time", "start_time", "end_time", "total_run_time",
    "created", "updated",
)  # fmt: skip
_HISTORY_COLUMNS = ("task_run_id", "type", "name", "timestamp", "transition_id", "state")
_DEFAULT_POLICY = EmpiricalPolicy().model_dump(mode="json")


@dataclasses.dataclass(slots=True)
class _Prepared:
    """A new run, ready to insert."""

    values: tuple[Any, ...]  # its row, in `_COLUMNS` order
    history: list[tuple[Any, ...]]  # its history rows, oldest first
    states: list[Any]  # the carried transitions (`TaskRunCreate.states`)
    coalesced: bool  # whether `values` and `history` already include them
    # what `run` is made of, made only when asked for (a minimal answer skips it);
    # None for a run `plain_creates.plain_row` prepared, answered only minimally
    parts: tuple[Any, ...] | None
    made: dict[str, Any] | None = None

    @property
    def run(self) -> dict[str, Any]:
        """Its `TaskRun` JSON."""
        if self.made is None:
            assert self.parts is not None, "a plain run is answered only minimally"
            self.made = _run_json(*self.parts)
        return self.made


# one written state: type, timestamp, transition id, and the state (a `State`, a wire
# state with its name filled in, or a `NewPending`), dumped only where needed
_Step = tuple[StateType, dt.datetime, uuid.UUID | None, Any]


def _as_json(source: Any) -> dict[str, Any]:
    return source.as_json() if type(source) is NewPending else state_json(source)


def _as_text(source: Any) -> str:
    """The stored text of `_as_json(source)` (`json_text` of it)."""
    return source.as_text() if type(source) is NewPending else state_text(source)


def _row(codec: Codec, item: Any, created: dt.datetime, limited: frozenset[str]) -> _Prepared:
    run_id = item.id or uuid4()
    if item.state is None:
        pending = NewPending(run_id, item.flow_run_id)
        first: _Step = (StateType.PENDING, pending.timestamp, None, pending)
        updates, expected = EMPTY_UPDATES, pending.timestamp
    else:
        state, updates = _initial(run_id, item, created)
        transition_id = state.state_details.transition_id
        first = (state.type, state.timestamp, transition_id, state)
        expected = _scheduled(state) or state.timestamp
    steps = [first]
    states = list(item.states or ())
    chain = _coalesced(run_id, item, first, updates, created, limited) if states else None
    if chain is not None:
        steps += chain[0]
        updates = chain[1]
    state_type, _, _, final = steps[-1]
    task_inputs = _task_inputs(item) if item.task_inputs else None
    # the run's times are its states' times (the same objects): each converted once
    stored_ts: dict[int, Any] = {}

    def ts(value: dt.datetime | None) -> Any:
        if value is None:
            return None
        out = stored_ts.get(id(value))  # `value` is alive for the whole call: ids are stable
        if out is None:
            out = stored_ts[id(value)] = codec.ts(value)
        return out

    key, stamp = codec.uuid(run_id), codec.ts(created)
    texts = [_as_text(step[3]) for step in steps]
    values = (
        key, item.name, codec.uuid(item.flow_run_id), item.task_key, item.dynamic_key,
        item.cache_key, codec.ts(item.cache_expiration),
        codec.json(item.tags) if item.tags else "[]",
        codec.json(task_inputs) if task_inputs else "{}",
        _policy_text(codec, item.empirical_policy),
        texts[-1], state_type.value, final.name, updates.run_count,
        ts(expected), ts(updates.start_time),
        ts(updates.end_time), updates.total_run_time, stamp, stamp,
    )  # fmt: skip
    history = [
        (key, t.value, source.name, ts(when), codec.uuid(tid), text)
        for (t, when, tid, source), text in zip(steps, texts, strict=True)
    ]
    parts = (run_id, item, task_inputs, final, state_type, updates, expected, created)
    return _Prepared(values, history, states, chain is not None, parts)


def _run_json(
    run_id: uuid.UUID,
    item: Any,
    task_inputs: dict[str, Any] | None,
    final: Any,
    state_type: StateType,
    updates: RunUpdates,
    expected: dt.datetime,
    created: dt.datetime,
) -> dict[str, Any]:
    """The `TaskRun` JSON of a run `_row` prepared."""
    as_json = _as_json(final)
    return {
        "id": run_id,
        "name": item.name,
        "flow_run_id": item.flow_run_id,
        "task_key": item.task_key,
        "dynamic_key": item.dynamic_key,
        "cache_key": item.cache_key,
        "cache_expiration": item.cache_expiration,
        "tags": item.tags,
        "task_inputs": task_inputs if task_inputs is not None else {},
        "empirical_policy": item.empirical_policy.model_dump(mode="json"),
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


def _task_inputs(item: Any) -> dict[str, Any]:
    return {k: [i.model_dump(mode="json") for i in v] for k, v in item.task_inputs.items()}


def _policy_text(codec: Codec, policy: EmpiricalPolicy) -> str:
    """The stored text of a run's policy (the default's, shared, when it equals it)."""
    if pydantic_core.to_json(policy) == _POLICY_BYTES:
        return POLICY_TEXT
    as_json = policy.model_dump(mode="json")
    return POLICY_TEXT if as_json == _DEFAULT_POLICY else codec.json(as_json)


def _coalesced(
    run_id: uuid.UUID,
    item: Any,
    first: _Step,
    updates: RunUpdates,
    when: dt.datetime,
    limited: frozenset[str],
) -> tuple[list[_Step], RunUpdates] | None:
    """The carried states as written over a new run, when the rules alone accept
    each as proposed; None when anything else could intervene (a cache key, a
    limited tag's slot, a Scheduled time to keep, a repeated transition id, a rule
    that would not ACCEPT): those are applied the normal way after the insert."""
    if limited and not limited.isdisjoint(item.tags):
        return None
    current, timestamp, transition_id, source = first
    seen = {transition_id} - {None}
    steps: list[_Step] = []
    for proposed in item.states:
        details = proposed.state_details
        scheduled = proposed.type == StateType.SCHEDULED  # would set expected_start_time
        if details.transition_id in seen or details.cache_key or scheduled:
            return None
        details.task_run_id = run_id
        if details.flow_run_id is None:
            details.flow_run_id = item.flow_run_id
        plain = plain_write("task", current, proposed, force=False, slots=None)
        if not plain and not _accepted(item, _as_json(source), updates, seen, proposed, when):
            return None
        updates = bookkeeping(
            current, timestamp, updates.run_count, updates.start_time, updates.end_time,
            updates.total_run_time, proposed,
        )  # fmt: skip
        if proposed.name is None:
            proposed.name = DEFAULT_STATE_NAMES[proposed.type]
        current, timestamp, source = proposed.type, proposed.timestamp, proposed
        if details.transition_id is not None:
            seen.add(details.transition_id)
        steps.append((current, timestamp, details.transition_id, source))
    return steps, updates


def _accepted(
    item: Any,
    current: dict[str, Any],
    updates: RunUpdates,
    seen: set[uuid.UUID],
    proposed: Any,
    when: dt.datetime,
) -> bool:
    """Whether `orchestrate` accepts `proposed` as it is, over a run in `current`
    (with no cached state and no slot counts: the caller ruled both out)."""
    snapshot = RunSnapshot(
        kind="task",
        state=State.model_validate(current),
        run_count=updates.run_count,
        empirical_policy=EmpiricalPolicy.model_validate(item.empirical_policy.model_dump()),
        start_time=updates.start_time,
        end_time=updates.end_time,
        total_run_time=updates.total_run_time,
        seen_transition_ids=frozenset(seen),
    )
    state = State.model_validate(state_json(proposed))
    decision = orchestrate(snapshot, state, now=when)
    return decision.result.status == SetStateStatus.ACCEPT and decision.new_state is state


_POLICY_BYTES = POLICY_TEXT.encode()
# no rule applies to a new run's Pending, and it changes no run field but the state
assert plain_write("task", None, WireState(type=StateType.PENDING), force=False, slots=None)


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


async def _check_flow_runs_exist(
    conn: AsyncConnection, flow_run_ids: Sequence[uuid.UUID | None]
) -> None:
    wanted = list({i for i in flow_run_ids if i is not None})
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
