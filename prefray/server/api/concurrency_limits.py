"""Tag concurrency limits: create/update, read, list, delete, reset."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pydantic import TypeAdapter

from prefray.exceptions import ObjectNotFound
from prefray.schemas import ConcurrencyLimit, ConcurrencyLimitCreate
from prefray.server.api._common import DB, json_response
from prefray.server.database import concurrency as store

__all__ = ["router"]

router = APIRouter(prefix="/api/concurrency_limits", tags=["concurrency limits"])

_LIMIT = TypeAdapter(ConcurrencyLimit)
_LIMITS = TypeAdapter(list[ConcurrencyLimit])


def _not_found(tag: str) -> ObjectNotFound:
    return ObjectNotFound(f"no concurrency limit on tag {tag!r}")


@router.post("/", response_model=ConcurrencyLimit, status_code=status.HTTP_201_CREATED)
async def create_concurrency_limit(body: ConcurrencyLimitCreate, db: DB) -> Response:
    """Set the limit on a tag (creating it, or changing the existing one)."""
    async with db.write() as conn:
        limit = await store.upsert_limit(conn, db.dialect, body.tag, body.concurrency_limit)
    return json_response(_LIMIT, limit, 201)


@router.get("/", response_model=list[ConcurrencyLimit])
async def read_concurrency_limits(db: DB) -> Response:
    async with db.read() as conn:
        limits = await store.read_limits(conn)
    return json_response(_LIMITS, limits)


@router.get("/tag/{tag:path}", response_model=ConcurrencyLimit)
async def read_concurrency_limit(tag: str, db: DB) -> Response:
    async with db.read() as conn:
        limit = await store.read_limit(conn, tag)
    if limit is None:
        raise _not_found(tag)
    return json_response(_LIMIT, limit)


@router.delete("/tag/{tag:path}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_concurrency_limit(tag: str, db: DB) -> Response:
    async with db.write() as conn:
        deleted = await store.delete_limit(conn, tag)
    if not deleted:
        raise _not_found(tag)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/reset/{tag:path}", response_model=ConcurrencyLimit)
async def reset_concurrency_limit(tag: str, db: DB) -> Response:
    """Free every slot of the tag (for slots held by runs that died unreported)."""
    async with db.write() as conn:
        limit = await store.reset_limit(conn, tag)
    if limit is None:
        raise _not_found(tag)
    return json_response(_LIMIT, limit)
