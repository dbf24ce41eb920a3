"""Storage for autonomous task runs: the queue task servers take work from.

A submitted run is a `task_run` row in Scheduled plus a `task_run_queue` row
holding the reference to its parameters in result storage. A task server
claims runs atomically: the queue rows it gets are marked `claimed_by` it with
a lease, and the runs move Scheduled -> Pending, in one transaction. Two
servers never get the same run:

- SQLite: write transactions are serialized (`BEGIN IMMEDIATE`);
- PostgreSQL: candidates are picked `FOR UPDATE SKIP LOCKED`, and the claim is
  a guarded `UPDATE ... WHERE claimed_by IS NULL`, re-checked by PostgreSQL
  against the newest row version if another claimer got there first.

A server renews its leases while its runs execute. Each claim first sweeps
expired leases: a run that is not finished goes back to Scheduled (named
`Requeued`, its concurrency slots freed) for another server to pick up; a
finished one just drops its lease.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from prefray.schemas import (
    ClaimedTaskRun,
    LeaseRenewal,
    SetStateStatus,
    TaskRun,
    TaskRunClaim,
    TaskRunSubmit,
)
from prefray.server.database import task_runs as task_run_store
from prefray.server.database.models import TaskRunORM, TaskRunQueueORM
from prefray.server.database.queries import insert_ignore
from prefray.server.database.transitions import TASK_RUNS, Proposal, apply_proposals
from prefray.states import TERMINAL_TYPES, Pending, ResultReference, Scheduled, StateType, now

__all__ = ["claim", "release", "renew", "submit"]

_QUEUE = TaskRunQueueORM.__table__
_RUNS = TaskRunORM.__table__
_SWEEP_BATCH = 500
_TERMINAL = [t.value for t in TERMINAL_TYPES]


async def submit(
    conn: AsyncConnection, dialect: str, items: Sequence[TaskRunSubmit]
) -> list[TaskRun]:
    """Create the runs Scheduled (unless a state is given) and queue them."""
    for item in items:
        if item.task_run.flow_run_id is not None:
            raise ValueError(
                f"task run {item.task_run.name!r} belongs to flow run "
                f"{item.task_run.flow_run_id}; only autonomous task runs (no flow run) "
                "are queued for task servers"
            )
    creates = [
        item.task_run.model_copy(update={"state": item.task_run.state or Scheduled()})
        for item in items
    ]
    created = await task_run_store.create_task_runs(conn, dialect, creates)
    when = now()
    rows = [
        {
            "task_run_id": run.id,
            "task_key": run.task_key,
            "parameters": item.parameters.model_dump(mode="json"),
            "created": when + dt.timedelta(microseconds=i),
        }
        for i, (item, (run, _)) in enumerate(zip(items, created, strict=True))
    ]
    if rows:
        await conn.execute(insert_ignore(dialect, _QUEUE), rows)
    return [run for run, _ in created]


async def claim(
    conn: AsyncConnection, request: TaskRunClaim, *, lock_rows: bool
) -> list[ClaimedTaskRun]:
    """Up to `request.limit` queued runs of the given task keys, now Pending and
    leased to `request.worker`."""
    when = now()
    await _sweep_expired(conn, when, lock_rows=lock_rows)
    candidates = await _candidates(conn, request, when, lock_rows=lock_rows)
    if not candidates:
        return []
    lease = when + dt.timedelta(seconds=request.lease_seconds)
    guarded = (
        sa.update(_QUEUE)
        .where(_QUEUE.c.task_run_id.in_(list(candidates)), _QUEUE.c.claimed_by.is_(None))
        .values(claimed_by=request.worker, lease_expires=lease)
        .returning(_QUEUE.c.task_run_id)
    )
    won = sorted((await conn.execute(guarded)).scalars())
    message = f"claimed by task server {request.worker}"
    proposals = [Proposal(run_id, Pending(message=message)) for run_id in won]
    results = await apply_proposals(conn, TASK_RUNS, proposals, lock_rows=lock_rows)
    accepted = [
        run_id
        for run_id, result in zip(won, results, strict=True)
        if result is not None and result.status == SetStateStatus.ACCEPT
    ]
    refused = sorted(set(won) - set(accepted))
    if refused:  # changed state meanwhile (cancelled, say): not ours to run
        await _set_claim(conn, refused, None, None)
    runs = await _read_runs(conn, accepted)
    return [  # in queue order
        ClaimedTaskRun(task_run=runs[run_id], parameters=reference)
        for run_id, reference in candidates.items()
        if run_id in runs
    ]


async def renew(conn: AsyncConnection, renewal: LeaseRenewal) -> list[uuid.UUID]:
    """Extend the worker's leases on these runs; the ids it still holds."""
    if not renewal.task_run_ids:
        return []
    lease = now() + dt.timedelta(seconds=renewal.lease_seconds)
    return await _set_lease_expiry(conn, renewal, lease)


async def release(conn: AsyncConnection, renewal: LeaseRenewal) -> list[uuid.UUID]:
    """The worker is done with these runs: their leases end now (a run that did not
    finish is re-queued by the next claim)."""
    if not renewal.task_run_ids:
        return []
    return await _set_lease_expiry(conn, renewal, now() - dt.timedelta(microseconds=1))


async def _set_lease_expiry(
    conn: AsyncConnection, renewal: LeaseRenewal, expires: dt.datetime
) -> list[uuid.UUID]:
    """Move the expiry of the leases this worker holds on these runs; their ids."""
    stmt = (
        sa.update(_QUEUE)
        .where(
            _QUEUE.c.task_run_id.in_(renewal.task_run_ids),
            _QUEUE.c.claimed_by == renewal.worker,
            _QUEUE.c.lease_expires.is_not(None),
        )
        .values(lease_expires=expires)
        .returning(_QUEUE.c.task_run_id)
    )
    return sorted((await conn.execute(stmt)).scalars())


async def _sweep_expired(conn: AsyncConnection, when: dt.datetime, *, lock_rows: bool) -> None:
    query = (
        sa.select(_QUEUE.c.task_run_id, _QUEUE.c.claimed_by, _RUNS.c.state_type)
        .join(_RUNS, _RUNS.c.id == _QUEUE.c.task_run_id)
        .where(_QUEUE.c.lease_expires.is_not(None), _QUEUE.c.lease_expires < when)
        .order_by(_QUEUE.c.task_run_id)
        .limit(_SWEEP_BATCH)
    )
    if lock_rows:
        query = query.with_for_update(skip_locked=True, of=_QUEUE)
    expired = list(await conn.execute(query))
    if not expired:
        return
    finished = [row.task_run_id for row in expired if row.state_type in _TERMINAL]
    lost = [row for row in expired if row.state_type not in _TERMINAL]
    if finished:
        await conn.execute(
            sa.update(_QUEUE).where(_QUEUE.c.task_run_id.in_(finished)).values(lease_expires=None)
        )
    if lost:
        await _requeue(conn, lost, lock_rows=lock_rows)


async def _requeue(conn: AsyncConnection, lost: list[Any], *, lock_rows: bool) -> None:
    proposals = [
        Proposal(
            row.task_run_id,
            Scheduled(
                name="Requeued",
                message=(
                    f"task server {row.claimed_by} stopped renewing its lease on this run "
                    "(it stopped or died); queued again for another task server"
                ),
            ),
            force=True,
        )
        for row in lost
    ]
    await apply_proposals(conn, TASK_RUNS, proposals, lock_rows=lock_rows)
    await _set_claim(conn, [row.task_run_id for row in lost], None, None)


async def _candidates(
    conn: AsyncConnection, request: TaskRunClaim, when: dt.datetime, *, lock_rows: bool
) -> dict[uuid.UUID, ResultReference]:
    query = (
        sa.select(_QUEUE.c.task_run_id, _QUEUE.c.parameters)
        .join(_RUNS, _RUNS.c.id == _QUEUE.c.task_run_id)
        .where(
            _QUEUE.c.task_key.in_(request.task_keys),
            _QUEUE.c.claimed_by.is_(None),
            _RUNS.c.state_type == StateType.SCHEDULED.value,
            sa.or_(_RUNS.c.expected_start_time.is_(None), _RUNS.c.expected_start_time <= when),
        )
        .order_by(_QUEUE.c.created)
        .limit(request.limit)
    )
    if lock_rows:
        query = query.with_for_update(skip_locked=True, of=_QUEUE)
    return {
        row.task_run_id: ResultReference.model_validate(row.parameters)
        for row in await conn.execute(query)
    }


async def _set_claim(
    conn: AsyncConnection,
    run_ids: list[uuid.UUID],
    worker: str | None,
    lease: dt.datetime | None,
) -> None:
    stmt = (
        sa.update(_QUEUE)
        .where(_QUEUE.c.task_run_id.in_(run_ids))
        .values(claimed_by=worker, lease_expires=lease)
    )
    await conn.execute(stmt)


async def _read_runs(conn: AsyncConnection, run_ids: list[uuid.UUID]) -> dict[uuid.UUID, TaskRun]:
    if not run_ids:
        return {}
    query = sa.select(_RUNS).where(_RUNS.c.id.in_(run_ids))
    return {row.id: TaskRun.model_validate(row._asdict()) for row in await conn.execute(query)}
