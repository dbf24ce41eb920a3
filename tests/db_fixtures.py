"""Database and in-process API fixtures for the server-side suites
(tests/server, tests/concurrency): one contract suite run against SQLite and
PostgreSQL. Registered for the whole test tree from tests/conftest.py.

`db_url` is parametrized over both backends. SQLite gets a fresh file per test;
PostgreSQL gets one throw-away database per session (`prefray_test_<random>`
on 127.0.0.1:5432, dropped at the end), emptied before each test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from prefray.server.app import create_app
from prefray.settings import Settings

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
_TABLES = (
    "concurrency_slot, concurrency_limit, task_run_queue, log, flow_run_input, "
    "task_run_state, flow_run_state, task_run, flow_run, flow"
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A throw-away PostgreSQL database for this session; its name."""
    name = f"prefray_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - report any failure as a skip reason
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not available: {exc}")
    yield name
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _truncate(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{name}", timeout=5)
    try:
        # concurrency_slot comes with the last migration: once it exists, all of _TABLES do.
        if await conn.fetchval("SELECT to_regclass('public.concurrency_slot') IS NOT NULL"):
            await conn.execute(f"TRUNCATE {_TABLES} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for an empty database, on each backend."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'db' / 'prefray.db'}"
    name = request.getfixturevalue("pg_database")
    asyncio.run(_truncate(name))
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", api_database_url=db_url)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://prefray.test") as c:
        yield c
