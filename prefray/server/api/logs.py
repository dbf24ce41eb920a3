"""Log routes: batched creation and filtered reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response, status
from pydantic import Field, TypeAdapter

from prefray.schemas import Log, LogCreate, LogFilter
from prefray.server.api._common import DB, json_response
from prefray.server.database import logs as store

__all__ = ["router"]

router = APIRouter(prefix="/api/logs", tags=["logs"])
_LOGS = TypeAdapter(list[Log])


@router.post("/", status_code=status.HTTP_201_CREATED)
async def create_logs(
    body: Annotated[list[LogCreate], Body(), Field(max_length=100_000)], db: DB
) -> dict[str, int]:
    async with db.write() as conn:
        count = await store.create_logs(conn, body)
    return {"count": count}


@router.post("/filter", response_model=list[Log])
async def read_logs(db: DB, body: LogFilter | None = None) -> Response:
    async with db.read() as conn:
        logs = await store.read_logs(conn, body or LogFilter())
    return json_response(_LOGS, logs)
