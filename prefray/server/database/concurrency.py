"""Storage for tag concurrency limits, and the slots Running task runs hold.

A slot is a row `(tag, task_run_id)` in `concurrency_slot`: taken when a task
run with a limited tag enters Running, given back when it leaves Running for
any state (Completed, Failed, Crashed, Cancelled, a timeout's Failed, a
retry's AwaitingRetry, a re-queue). Both happen in the transaction that writes
the state change, so the number of rows for a tag is the number of its task
runs running, whatever crashes in between.

Concurrent writers: SQLite serializes write transactions (`BEGIN IMMEDIATE`);
on PostgreSQL a batch that may take a slot locks the limit rows of the tags
involved (`SELECT ... FOR UPDATE`, in tag order, after the run rows) before it
counts the slots in use, so two batches never both see the last free slot.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from prefray.schemas import ConcurrencyLimit
from prefray.server.database.models import ConcurrencyLimitORM, ConcurrencySlotORM, TaskRunORM
from prefray.server.database.queries import insert_ignore, insert_or_update
from prefray.server.orchestration import SlotCounts
from prefray.states import State, StateType, now

__all__ = [
    "SlotBook",
    "delete_limit",
    "read_limit",
    "read_limits",
    "reset_limit",
    "upsert_limit",
]

_LIMITS = ConcurrencyLimitORM.__table__
_SLOTS = ConcurrencySlotORM.__table__
_TASK_RUNS = TaskRunORM.__table__
_CHUNK = 5_000


class _Proposal(Protocol):
    run_id: uuid.UUID
    state: State


# limits -------------------------------------------------------------------------
async def upsert_limit(
    conn: AsyncConnection, dialect: str, tag: str, limit: int
) -> ConcurrencyLimit:
    """Create the limit on `tag`, or change it if it exists."""
    when = now()
    row = {
        "id": uuid.uuid4(),
        "tag": tag,
        "concurrency_limit": limit,
        "created": when,
        "updated": when,
    }
    stmt = insert_or_update(dialect, _LIMITS, ["tag"], ["concurrency_limit", "updated"])
    await conn.execute(stmt, row)
    found = await read_limit(conn, tag)
    assert found is not None
    return found


async def read_limit(conn: AsyncConnection, tag: str) -> ConcurrencyLimit | None:
    row = (await conn.execute(sa.select(_LIMITS).where(_LIMITS.c.tag == tag))).first()
    if row is None:
        return None
    return (await _with_slots(conn, [row]))[0]


async def read_limits(conn: AsyncConnection) -> list[ConcurrencyLimit]:
    rows = list(await conn.execute(sa.select(_LIMITS).order_by(_LIMITS.c.tag)))
    return await _with_slots(conn, rows)


async def delete_limit(conn: AsyncConnection, tag: str) -> bool:
    """Remove the limit and its slots; False when there was none."""
    await conn.execute(sa.delete(_SLOTS).where(_SLOTS.c.tag == tag))
    result = await conn.execute(sa.delete(_LIMITS).where(_LIMITS.c.tag == tag))
    return bool(result.rowcount)


async def reset_limit(conn: AsyncConnection, tag: str) -> ConcurrencyLimit | None:
    """Free every slot of `tag` (slots held by runs whose process died unreported)."""
    await conn.execute(sa.delete(_SLOTS).where(_SLOTS.c.tag == tag))
    return await read_limit(conn, tag)


async def _with_slots(conn: AsyncConnection, rows: Sequence[Any]) -> list[ConcurrencyLimit]:
    tags = [row.tag for row in rows]
    holders: dict[str, list[uuid.UUID]] = {tag: [] for tag in tags}
    if tags:
        query = sa.select(_SLOTS.c.tag, _SLOTS.c.task_run_id).where(_SLOTS.c.tag.in_(tags))
        for tag, run_id in await conn.execute(query.order_by(_SLOTS.c.created)):
            holders[tag].append(run_id)
    return [
        ConcurrencyLimit(
            id=row.id,
            tag=row.tag,
            concurrency_limit=row.concurrency_limit,
            active_slots=holders[row.tag],
            created=row.created,
            updated=row.updated,
        )
        for row in rows
    ]


# slots ----------------------------------------------------------------------------
@dataclasses.dataclass
class SlotBook:
    """The slots that one batch of task-run proposals may take or give back.

    Loaded once per batch, consulted and updated in memory as the batch is
    decided in order, written by `write` in the batch's transaction.
    """

    limits: dict[str, int]
    run_tags: dict[uuid.UUID, frozenset[str]]  # only runs carrying a limited tag
    active: dict[str, int]
    held: set[tuple[str, uuid.UUID]]
    taken: set[tuple[str, uuid.UUID]] = dataclasses.field(default_factory=set)
    freed: set[tuple[str, uuid.UUID]] = dataclasses.field(default_factory=set)

    @classmethod
    async def load(
        cls,
        conn: AsyncConnection,
        proposals: Sequence[_Proposal],
        run_ids: Iterable[uuid.UUID],
        *,
        lock_rows: bool,
    ) -> SlotBook | None:
        """None when no run in the batch carries a limited tag (the usual case: one
        query on the small limits table)."""
        limits = {
            row.tag: row.concurrency_limit
            for row in await conn.execute(sa.select(_LIMITS.c.tag, _LIMITS.c.concurrency_limit))
        }
        if not limits:
            return None
        run_tags = await _limited_tags_of(conn, list(run_ids), limits)
        if not run_tags:
            return None
        tags = sorted(set().union(*run_tags.values()))
        if lock_rows and any(
            p.state.type == StateType.RUNNING and p.run_id in run_tags for p in proposals
        ):
            # after the run rows (locked by the caller), in tag order: no deadlocks
            lock = sa.select(_LIMITS.c.id).where(_LIMITS.c.tag.in_(tags)).order_by(_LIMITS.c.tag)
            await conn.execute(lock.with_for_update())
        active = await _active_counts(conn, tags)
        held = await _held_slots(conn, list(run_tags))
        return cls(limits=limits, run_tags=run_tags, active=active, held=held)

    def counts_for(self, run_id: uuid.UUID) -> SlotCounts | None:
        tags = self.run_tags.get(run_id)
        if not tags:
            return None
        return SlotCounts(
            limits={tag: self.limits[tag] for tag in tags},
            active={tag: self.active.get(tag, 0) - ((tag, run_id) in self.held) for tag in tags},
        )

    def track(self, run_id: uuid.UUID, new_state: State) -> None:
        """A state was written for the run: take its slots on entering Running,
        give them back on any other state."""
        tags = self.run_tags.get(run_id)
        if not tags:
            return
        running = new_state.type == StateType.RUNNING
        for tag in tags:
            key = (tag, run_id)
            if running and key not in self.held:
                self.held.add(key)
                self.active[tag] = self.active.get(tag, 0) + 1
                _move(key, undo=self.freed, do=self.taken)
            elif not running and key in self.held:
                self.held.discard(key)
                self.active[tag] -= 1
                _move(key, undo=self.taken, do=self.freed)

    async def write(self, conn: AsyncConnection, when: dt.datetime) -> None:
        if self.freed:
            stmt = sa.delete(_SLOTS).where(
                _SLOTS.c.tag == sa.bindparam("_tag"),
                _SLOTS.c.task_run_id == sa.bindparam("_run"),
            )
            await conn.execute(stmt, [{"_tag": t, "_run": r} for t, r in sorted(self.freed)])
        if self.taken:
            rows = [{"tag": t, "task_run_id": r, "created": when} for t, r in sorted(self.taken)]
            await conn.execute(insert_ignore(conn.dialect.name, _SLOTS), rows)


def _move(key: tuple[str, uuid.UUID], *, undo: set[Any], do: set[Any]) -> None:
    # taking a slot given back earlier in the same batch (or the reverse) writes nothing
    if key in undo:
        undo.discard(key)
    else:
        do.add(key)


async def _limited_tags_of(
    conn: AsyncConnection, run_ids: list[uuid.UUID], limits: dict[str, int]
) -> dict[uuid.UUID, frozenset[str]]:
    out: dict[uuid.UUID, frozenset[str]] = {}
    for start in range(0, len(run_ids), _CHUNK):
        chunk = run_ids[start : start + _CHUNK]
        query = sa.select(_TASK_RUNS.c.id, _TASK_RUNS.c.tags).where(_TASK_RUNS.c.id.in_(chunk))
        for run_id, tags in await conn.execute(query):
            limited = frozenset(tag for tag in tags or () if tag in limits)
            if limited:
                out[run_id] = limited
    return out


async def _active_counts(conn: AsyncConnection, tags: list[str]) -> dict[str, int]:
    query = (
        sa.select(_SLOTS.c.tag, sa.func.count())
        .where(_SLOTS.c.tag.in_(tags))
        .group_by(_SLOTS.c.tag)
    )
    return {tag: int(count) for tag, count in await conn.execute(query)}


async def _held_slots(
    conn: AsyncConnection, run_ids: list[uuid.UUID]
) -> set[tuple[str, uuid.UUID]]:
    held: set[tuple[str, uuid.UUID]] = set()
    for start in range(0, len(run_ids), _CHUNK):
        chunk = run_ids[start : start + _CHUNK]
        query = sa.select(_SLOTS.c.tag, _SLOTS.c.task_run_id).where(_SLOTS.c.task_run_id.in_(chunk))
        held.update((tag, run_id) for tag, run_id in await conn.execute(query))
    return held
