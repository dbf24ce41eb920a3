"""One trip to aiosqlite's thread per SQLite statement, instead of three or four.

aiosqlite runs each call on the connection's own thread and hands the result
back through the event loop: SQLAlchemy's adapter makes one such trip to open
a cursor, one to execute, one to fetch the rows and one to close the cursor.
Each trip is a thread hand-off plus a GIL hand-off plus an event-loop wake-up
(~50-80 us of the server's CPU on a busy machine), and a single-item request
made ~25 of them. `OneHopCursor` does the whole statement (cursor, execute,
fetch, close) in one function on that thread; what SQLAlchemy reads
afterwards (`description`, `rowcount`, `lastrowid`, the rows) is kept on the
adapter's cursor.

A write transaction's `BEGIN IMMEDIATE` (`defer_begin`) rides along with its
first statement. `OneHopConnection` also skips the ROLLBACK that SQLAlchemy sends when a
connection that only read goes back (reads run outside any SQLite
transaction: see `engine._on_begin`): it is sent only while SQLite says a
transaction is open.

Installed per connection by `engine._install_sqlite_hooks` (the adapter's
class is swapped on connect); everything else (pooling, the transaction
discipline, error wrapping) is SQLAlchemy's own.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.util.concurrency import await_

__all__ = ["OneHopConnection", "OneHopCursor", "defer_begin", "executemany_together", "install"]


class _Outcome:
    """What a finished statement leaves for SQLAlchemy to read (a closed sqlite3
    cursor keeps none of it reachable)."""

    __slots__ = ("arraysize", "description", "lastrowid", "rowcount")

    def __init__(self, description: Any, rowcount: int, lastrowid: int | None) -> None:
        self.description = description
        self.rowcount = rowcount
        self.lastrowid = lastrowid
        self.arraysize = 1


_NOTHING = _Outcome(None, -1, None)


def _run(
    conn: Any, begin: str | None, operation: str, parameters: Any, many: bool
) -> tuple[_Outcome, list[Any]]:
    """On aiosqlite's thread: the whole statement (after the deferred BEGIN, if any)."""
    if begin is not None:
        conn.execute(begin)
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return _Outcome(description, cursor.rowcount, cursor.lastrowid), rows
    finally:
        cursor.close()


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ()

    def __init__(self, adapt_connection: Any) -> None:
        # no aiosqlite cursor is opened: `_run` opens and closes a sqlite3 one
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = _NOTHING  # type: ignore[assignment]
        self._soft_closed_memoized = {}  # type: ignore[assignment]
        self._rows = collections.deque()

    async def _hop(self, operation: Any, parameters: Any, many: bool) -> None:
        aio = self._connection
        async with self._adapt_connection._execute_mutex:
            begin, aio.prefray_begin = aio.prefray_begin, None
            outcome, rows = await aio._execute(_run, aio._conn, begin, operation, parameters, many)
        self._cursor = outcome  # type: ignore[assignment]
        self._rows = collections.deque(rows)

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        try:
            await_(self._hop(operation, parameters, False))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        try:
            await_(self._hop(operation, seq_of_parameters, True))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    async def _async_soft_close(self) -> None:
        return None  # nothing is open on the thread

    def close(self) -> None:
        self._rows.clear()

    def nextset(self) -> None:
        return None

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()

    _cursor_cls = OneHopCursor

    def commit(self) -> None:
        if self._connection.prefray_committed:  # by `executemany_together(last=True)`
            self._connection.prefray_committed = False
            return
        if self._connection.prefray_begin is not None:
            # no statement ran: the transaction never began, nothing to commit
            self._connection.prefray_begin = None
            return
        super().commit()

    def rollback(self) -> None:
        self._connection.prefray_begin = None
        self._connection.prefray_committed = False
        raw = self._connection._connection
        # reading `in_transaction` from this thread is safe: no call is running on
        # aiosqlite's thread between statements of one connection
        if raw is not None and raw.in_transaction:
            super().rollback()


def install(dbapi_connection: Any) -> None:
    """Make a freshly made aiosqlite adapter one-hop (no-op for anything else)."""
    if type(dbapi_connection) is AsyncAdapt_aiosqlite_connection:
        dbapi_connection.__class__ = OneHopConnection
        dbapi_connection._connection.prefray_begin = None
        dbapi_connection._connection.prefray_committed = False


def defer_begin(dbapi_connection: Any, sql: str) -> bool:
    """Send `sql` (a BEGIN) with the transaction's first statement, in the same trip to
    the thread; False where the connection is not one-hop (the caller sends it now).

    A failing BEGIN (the database stays locked past the busy timeout) then fails that
    first statement, with the same error."""
    if not isinstance(dbapi_connection, OneHopConnection):
        return False
    dbapi_connection._connection.prefray_begin = sql
    return True


class _Failed(Exception):
    def __init__(self, index: int, error: sqlite3.Error) -> None:
        super().__init__(index, error)
        self.index, self.error = index, error


def _run_all(
    conn: Any, begin: str | None, statements: Sequence[tuple[str, Any]], commit: bool
) -> None:
    """On aiosqlite's thread: several executemany statements in order (then COMMIT)."""
    if begin is not None:
        conn.execute(begin)
    for index, (operation, rows) in enumerate(statements):
        try:
            conn.executemany(operation, rows).close()
        except sqlite3.Error as error:
            raise _Failed(index, error) from error
    if commit:
        try:
            conn.commit()
        except sqlite3.Error as error:
            raise _Failed(len(statements), error) from error


async def executemany_together(
    conn: AsyncConnection, statements: Sequence[tuple[str, Sequence[Any]]], *, last: bool = False
) -> None:
    """`conn.exec_driver_sql(sql, rows)` (an executemany) for each statement in order,
    in a single trip to the thread on one-hop SQLite. For statements whose results
    nobody reads (the UPDATE and history INSERT that end a batch of state reports).

    Errors are SQLAlchemy's wrappers of the driver's, as from `exec_driver_sql`;
    SQLAlchemy's cursor events do not see these statements.

    `last`: the caller's transaction runs nothing after these statements but its
    commit, which then happens in the same trip (SQLAlchemy's COMMIT that follows
    costs nothing). Only for a transaction that cannot fail after this call: what
    is written here stays written."""
    raw = await conn.get_raw_connection()
    adapter = raw.dbapi_connection
    if not isinstance(adapter, OneHopConnection):
        for operation, rows in statements:
            await conn.exec_driver_sql(operation, list(rows))
        return
    aio = adapter._connection
    async with adapter._execute_mutex:
        begin, aio.prefray_begin = aio.prefray_begin, None
        try:
            await aio._execute(_run_all, aio._conn, begin, statements, last)
        except _Failed as failed:
            operation, rows = (*statements, ("COMMIT", ()))[failed.index]
            raise sa_exc.DBAPIError.instance(
                operation, list(rows), failed.error, sqlite3.Error, dialect=conn.dialect
            ) from failed.error
        aio.prefray_committed = last
