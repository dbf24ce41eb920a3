"""Storage for log records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from prefray.schemas import Log, LogCreate, LogFilter
from prefray.server.database.models import LogORM

__all__ = ["create_logs", "read_logs"]

_LOGS = LogORM.__table__


async def create_logs(conn: AsyncConnection, items: Sequence[LogCreate]) -> int:
    if items:
        await conn.execute(sa.insert(_LOGS), [_row(item) for item in items])
    return len(items)


def _row(item: LogCreate) -> dict[str, Any]:
    row = item.model_dump()
    # PostgreSQL text cannot hold NUL; a log line is kept rather than refused
    for key in ("message", "name"):
        if "\x00" in row[key]:
            row[key] = row[key].replace("\x00", "\ufffd")
    return row


async def read_logs(conn: AsyncConnection, flt: LogFilter) -> list[Log]:
    c = _LOGS.c
    where: list[Any] = []
    if flt.flow_run_id is not None:
        where.append(c.flow_run_id == flt.flow_run_id)
    if flt.task_run_id is not None:
        where.append(c.task_run_id == flt.task_run_id)
    if flt.level_ge is not None:
        where.append(c.level >= flt.level_ge)
    query = (
        sa.select(_LOGS)
        .where(*where)
        .order_by(c.timestamp, c.id)
        .limit(flt.limit)
        .offset(flt.offset)
    )
    return [Log.model_validate(row._asdict()) for row in await conn.execute(query)]
