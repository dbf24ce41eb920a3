"""What every route module shares: the database dependency and fast JSON answers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request, Response
from pydantic import TypeAdapter

from prefray.server.database import Database

__all__ = ["DB", "json_response", "lock_rows"]


async def _database(request: Request) -> Database:
    # async: FastAPI runs a plain `def` dependency in a worker thread, a thread
    # round trip on every request
    return request.app.state.db


DB = Annotated[Database, Depends(_database)]


def lock_rows(db: Database) -> bool:
    # SQLite already serializes writers; PostgreSQL must lock the rows it changes
    return not db.is_sqlite


def json_response(adapter: TypeAdapter[Any], value: Any, status_code: int = 200) -> Response:
    """Serialize in one pass in pydantic-core (the route's response_model documents it)."""
    return Response(
        adapter.dump_json(value), status_code=status_code, media_type="application/json"
    )
