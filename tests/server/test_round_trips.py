"""What one request costs the database driver: trips to aiosqlite's thread on SQLite
(one per statement, the write's BEGIN IMMEDIATE riding with its first statement, no
ROLLBACK after a read), no ping round trips on PostgreSQL; and that the write
discipline still holds with them."""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiosqlite.core
import httpx
import pytest
from fastapi import FastAPI

from prefray.server.database import Database, migrate

pytestmark = pytest.mark.anyio


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter[str]]:
    """Calls run on aiosqlite's thread, by function name."""
    counts: collections.Counter[str] = collections.Counter()
    original = aiosqlite.core.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        counts[getattr(fn, "__name__", repr(fn))] += 1
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counted)
    yield counts


async def test_single_requests_make_few_sqlite_trips(
    client: httpx.AsyncClient, app: FastAPI, hops: collections.Counter[str]
) -> None:
    if not app.state.db.is_sqlite:
        pytest.skip("aiosqlite only")
    r = await client.post("/api/flow_runs/", json={"flow_name": "f", "id": str(uuid.uuid4())})
    assert r.status_code == 201
    fr = r.json()["id"]
    expected = [  # (method, path, body, trips: statements + COMMIT)
        # INSERT ... RETURNING (the flow's id inside it), history row, COMMIT
        ("POST", "/api/flow_runs/", {"flow_name": "f"}, 3),
        ("GET", f"/api/flow_runs/{fr}", None, 1),
        # the run; UPDATE, history row and COMMIT together
        ("POST", f"/api/flow_runs/{fr}/set_state", {"state": {"type": "RUNNING"}}, 2),
        ("POST", f"/api/flow_runs/{fr}/set_state", {"state": {"type": "COMPLETED"}}, 2),
        # Completed -> Running is rejected, nothing written: the run, COMMIT
        ("POST", f"/api/flow_runs/{fr}/set_state", {"state": {"type": "RUNNING"}}, 2),
        ("POST", "/api/logs/", [{"level": 20, "message": "m", "timestamp": "2024-01-01T00:00:00Z",
                                 "flow_run_id": fr}], 2),
    ]  # fmt: skip
    for method, path, body, trips in expected:
        hops.clear()
        r = await client.request(method, path, json=body)
        assert r.status_code < 300, r.text
        assert sum(hops.values()) == trips, (path, dict(hops))
    r = await client.get(f"/api/flow_runs/{fr}")
    assert r.json()["state_type"] == "COMPLETED"  # committed, the REJECT wrote nothing
    r = await client.post(
        "/api/task_runs/",
        json={"name": "t", "flow_run_id": fr, "task_key": "k", "dynamic_key": "0"},
    )
    tr = r.json()["id"]
    hops.clear()
    body = {"name": "t", "flow_run_id": fr, "task_key": "k", "dynamic_key": "1"}
    r = await client.post("/api/task_runs/", json=body)
    assert r.status_code == 201
    # the flow run exists, INSERT ... RETURNING, history row + COMMIT
    assert sum(hops.values()) == 3, dict(hops)
    hops.clear()
    r = await client.post("/api/task_runs/", json=body)
    assert r.status_code == 200  # a replay: read back, then COMMIT on its own
    hops.clear()
    report = [{"task_run_id": tr, "state": {"type": "RUNNING"}}]
    r = await client.post("/api/task_runs/states", json=report)
    assert r.json()[0]["status"] == "ACCEPT"
    # the runs (no concurrency limit: no query of their own), UPDATE + history + COMMIT
    assert sum(hops.values()) == 2, dict(hops)
    r = await client.get(f"/api/task_runs/{tr}")
    assert r.json()["state_type"] == "RUNNING"  # committed


async def test_deferred_begin_still_takes_the_write_lock_up_front(tmp_path: Path) -> None:
    path = tmp_path / "prefray.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    await migrate(db)
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        async with db.write() as conn:
            await conn.exec_driver_sql("SELECT 1")  # a read only, yet the lock is held
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # released by the commit
        other.execute("ROLLBACK")
        # a write block that runs no statement begins and commits nothing
        async with db.write():
            pass
        other.execute("BEGIN IMMEDIATE")
        # while another process holds the lock, the first statement waits and fails
        # as BEGIN IMMEDIATE did (the app answers 503)
        async with db.engine.connect() as conn:
            await conn.exec_driver_sql("PRAGMA busy_timeout = 50")
        with pytest.raises(Exception, match="locked"):
            async with db.write() as conn:
                await conn.exec_driver_sql("SELECT 1")
        other.execute("ROLLBACK")
        async with db.write() as conn:  # the connection is usable again
            await conn.exec_driver_sql("SELECT 1")
    finally:
        other.close()
        await db.dispose()


@pytest.mark.postgres
async def test_postgres_replaces_a_pooled_connection_the_server_closed(
    pg_database: str,
) -> None:
    import asyncpg

    db = Database(f"postgresql+asyncpg://postgres@127.0.0.1:5432/{pg_database}")
    try:
        for _ in range(2):
            async with db.read() as conn:
                pid = (await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar()
            admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
            try:
                await admin.execute(f"SELECT pg_terminate_backend({pid})")
            finally:
                await admin.close()
            await asyncio.sleep(0.2)  # the pooled connection's socket sees the close
            async with db.read() as conn:
                assert (await conn.exec_driver_sql("SELECT 1")).scalar() == 1
    finally:
        await db.dispose()


async def test_a_lost_database_connection_answers_503_for_the_client_to_retry(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """Without pre-ping, a pooled connection the database dropped unnoticed fails the
    statement that uses it: SQLAlchemy marks the error `connection_invalidated` (and
    the pool replaces the connection); the app answers 503 + Retry-After, which the
    client retries, instead of a 500."""
    import sqlalchemy.exc as sa_exc

    async def dropped() -> None:
        raise sa_exc.DBAPIError(
            "SELECT 1", None, ConnectionResetError("connection reset"), connection_invalidated=True
        )

    app.router.add_api_route("/api/test-dropped-connection", dropped)
    r = await client.get("/api/test-dropped-connection")
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    assert "connection was lost" in r.json()["detail"]
