"""The database connection: one `Database` per app, SQLite or PostgreSQL.

SQLite discipline (the default, one file shared by every driver on a host):
WAL so readers never block the writer, a 30 s busy timeout, and one writer
at a time: inside a process an `asyncio.Lock` serializes write transactions,
and every write transaction starts with `BEGIN IMMEDIATE`, so a second server
process on the same file waits for the write lock up front instead of failing
half way with "database is locked".

PostgreSQL (`postgresql+asyncpg://...`) needs neither: writers lock the rows
they change (`SELECT ... FOR UPDATE`, in id order so that batches never
deadlock).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from prefray.exceptions import ConfigurationError
from prefray.server.database import onehop

__all__ = ["Database", "json_dumps"]

_BUSY_TIMEOUT_S = 30.0


def json_dumps(value: Any) -> str:
    # NaN/Infinity are not JSON; refusing them here keeps them out of the
    # database (PostgreSQL would refuse them later, SQLite would hand them back
    # in a response that cannot be encoded)
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


class Database:
    """An async engine plus the write discipline described in the module docstring."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigurationError(
                f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}: "
                "use sqlite+aiosqlite:///path or postgresql+asyncpg://user@host/db"
            )
        self.is_sqlite = self.dialect == "sqlite"
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        self.engine: AsyncEngine = self._create_engine(parsed, echo)

    @property
    def sqlite_path(self) -> Path | None:
        if not self.is_sqlite:
            return None
        database = make_url(self.url).database
        if not database or database == ":memory:":
            return None
        return Path(database)

    def _create_engine(self, parsed: sa.URL, echo: bool) -> AsyncEngine:
        if self.is_sqlite:
            path = self.sqlite_path
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
            engine = create_async_engine(
                parsed,
                echo=echo,
                json_serializer=json_dumps,
                connect_args={"timeout": _BUSY_TIMEOUT_S},
                pool_size=8,
                max_overflow=8,
                # every write ends in an explicit COMMIT/ROLLBACK and reads run in
                # autocommit (see `_on_begin`): the reset would be a wasted round trip
                pool_reset_on_return=None,
            )
            _install_sqlite_hooks(engine)
            return engine
        engine = create_async_engine(
            parsed,
            echo=echo,
            json_serializer=json_dumps,
            pool_size=10,
            max_overflow=20,
            # no pool_pre_ping: asyncpg's ping is three round trips (BEGIN, ";",
            # ROLLBACK) on every checkout; `_on_checkout` looks at the socket instead
        )
        _install_postgres_hooks(engine)
        return engine

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reading (a deferred transaction, rolled back at the end)."""
        async with self.engine.connect() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed when the block exits cleanly."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock, self.engine.connect() as conn:
            await conn.execution_options(prefray_write=True)
            async with conn.begin():
                yield conn

    async def dispose(self) -> None:
        await self.engine.dispose()


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    @sa.event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        onehop.install(dbapi_connection)  # one thread hop per statement
        # take transaction control away from the driver: `_on_begin` decides
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        # safe with WAL: a crash loses no committed transaction, only an OS
        # crash or power loss may lose the last few
        cursor.execute("PRAGMA synchronous = NORMAL")
        # 16 MiB of page cache (default 2 MiB): a 10,000-run batch touches more
        # index pages than that, and re-reading them from the OS halves insert speed
        cursor.execute("PRAGMA cache_size = -16384")
        cursor.close()

    @sa.event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # reads stay in autocommit (each statement sees a consistent snapshot of
        # its own); writes take the write lock up front
        if conn.get_execution_options().get("prefray_write", False):
            # sent with the first statement (one thread hop less), else now
            if not onehop.defer_begin(conn.connection.dbapi_connection, "BEGIN IMMEDIATE"):
                conn.exec_driver_sql("BEGIN IMMEDIATE")


def _install_postgres_hooks(engine: AsyncEngine) -> None:
    @sa.event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        # a pooled connection whose server went away (restart, idle timeout,
        # pg_terminate_backend) has seen its socket closed while it sat in the pool:
        # the pool then replaces it, as pre-ping would, without a round trip
        raw = getattr(dbapi_connection, "_connection", None)
        if raw is not None and raw.is_closed():
            raise sa.exc.DisconnectionError("the pooled connection was closed by the server")
