"""Plain-SQL helpers for the hot paths (bulk task-run creation, batched state reports).

SQLAlchemy Core spends more time per row binding parameters (type processors,
`construct_params`) than SQLite spends storing it. On the hot paths values are
encoded here once, into what the driver takes as-is, and sent with
`exec_driver_sql` as plain tuples. The statements still run on the
SQLAlchemy connection, so they share its transaction, and driver errors are
wrapped into the same `sqlalchemy.exc` classes the app maps to 4xx answers.

What the column types store, per dialect (must match `models.py`):

| type | SQLite | PostgreSQL (asyncpg) |
| --- | --- | --- |
| `Uuid` | 32 hex digits | `uuid.UUID` |
| `UTCDateTime` | naive UTC text `YYYY-MM-DD HH:MM:SS.ffffff` | aware datetime |
| `JSON` | text | text (json codec takes `str`) |
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import uuid
from collections.abc import Sequence
from typing import Any

import pydantic_core
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from prefray.server.database.engine import json_dumps

__all__ = ["Codec", "codec_for", "iso_json", "json_text", "json_ts_of_stored"]

_UTC = dt.timezone.utc
# rows per multi-row INSERT: 20 columns x 1,000 stays under both dialects' limits
# on bound parameters (SQLite 32,766; PostgreSQL 32,767)
ROWS_PER_INSERT = 1_000


def _unstorable(reason: str) -> sa_exc.StatementError:
    # the app answers a StatementError wrapping a ValueError with a 422
    return sa_exc.StatementError(reason, None, None, ValueError(reason))


def json_text(value: Any) -> str:
    """JSON text of a JSON-mode value (dicts, lists, str, numbers, None); NaN/Infinity
    are refused like `engine.json_dumps` does."""
    raw = pydantic_core.to_json(value, inf_nan_mode="constants")
    if b"NaN" in raw or b"Infinity" in raw:
        # most likely a string mentioning them; the strict encoder decides
        try:
            return json_dumps(value)
        except ValueError as exc:
            raise _unstorable(f"{exc} (NaN and Infinity cannot be stored)") from None
    return raw.decode()


def iso_json(value: dt.datetime) -> str:
    """A datetime as pydantic writes it in JSON (the wire format of `State`)."""
    return pydantic_core.to_json(value)[1:-1].decode()


def json_ts_of_stored(text: str) -> str:
    """`iso_json` of the UTC datetime SQLite stores as `text` ("YYYY-MM-DD HH:MM:SS.ffffff")."""
    if text.endswith(".000000"):  # pydantic leaves out a zero fraction
        return f"{text[:10]}T{text[11:19]}Z"
    return f"{text[:10]}T{text[11:]}Z"


class Codec:
    """Driver-ready values and SQL placeholders for one dialect."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.sqlite = dialect == "sqlite"

    def uuid(self, value: uuid.UUID | None) -> Any:
        if value is None:
            return None
        return value.hex if self.sqlite else value

    def uuid_text(self, value: str) -> Any:
        """`uuid(...)` of a UUID given as its canonical text (lowercase, hyphenated)."""
        return value.replace("-", "") if self.sqlite else uuid.UUID(value)

    def uuid_out(self, value: Any) -> uuid.UUID | None:
        """A stored id as a `uuid.UUID`."""
        if value is None or isinstance(value, uuid.UUID):
            return value
        return uuid.UUID(hex=value)

    def ts(self, value: dt.datetime | None) -> Any:
        if value is None:
            return None
        try:
            if value.tzinfo is None:
                value = value.replace(tzinfo=_UTC)
            elif value.tzinfo is not _UTC:
                value = value.astimezone(_UTC)
        except OverflowError as exc:
            raise _unstorable(f"a timestamp is out of range: {exc}") from None
        if not self.sqlite:
            return value
        return value.isoformat(" ", "microseconds")[:-6]  # less its "+00:00"

    def ts_steps(self, start: dt.datetime, count: int) -> list[Any]:
        """`[ts(start + i microseconds) for i in range(count)]`, for an aware `start`."""
        first = self.ts(start)
        if not self.sqlite or start.microsecond + count > 1_000_000:
            return [self.ts(start + dt.timedelta(microseconds=i)) for i in range(count)]
        head, micro = first[:20], start.microsecond  # "YYYY-MM-DD HH:MM:SS."
        return [f"{head}{micro + i:06d}" for i in range(count)]

    def ts_of_json(self, text: str, value: dt.datetime) -> Any:
        """`ts(value)` for a UTC datetime whose JSON text (pydantic's: "...SS[.ffffff]Z")
        is `text`."""
        if not self.sqlite:
            return self.ts(value)
        if len(text) == 27:  # with microseconds
            return f"{text[:10]} {text[11:26]}"
        return f"{text[:10]} {text[11:19]}.000000"

    def ts_out(self, value: Any) -> dt.datetime | None:
        if value is None or isinstance(value, dt.datetime):
            return value
        return dt.datetime.fromisoformat(value).replace(tzinfo=_UTC)

    def json(self, value: Any) -> str:
        return json_text(value)

    def params(self, count: int, start: int = 1) -> str:
        """`?, ?, ...` (SQLite) or `$1, $2, ...` (PostgreSQL)."""
        if self.sqlite:
            return ", ".join("?" * count)
        return ", ".join(f"${i}" for i in range(start, start + count))

    def json_field(self, column: str, field: str) -> str:
        """SQL for a top-level text field of a JSON column."""
        if self.sqlite:
            return f"json_extract({column}, '$.{field}')"
        return f"({column}->>'{field}')"

    def as_text(self, column: str) -> str:
        """SQL reading a JSON column as text (no decoding in the driver)."""
        return column if self.sqlite else f"{column}::text"

    async def insert_many(
        self,
        conn: AsyncConnection,
        table: str,
        columns: Sequence[str],
        rows: Sequence[tuple[Any, ...]],
    ) -> None:
        if rows:
            await conn.exec_driver_sql(self.insert_sql(table, columns), list(rows))

    def insert_sql(self, table: str, columns: Sequence[str]) -> str:
        """`INSERT INTO table (columns) VALUES (placeholders)`, for executemany."""
        return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({self.params(len(columns))})"

    async def insert_ignore_returning(
        self,
        conn: AsyncConnection,
        table: str,
        columns: Sequence[str],
        rows: Sequence[tuple[Any, ...]],
        returning: str,
    ) -> list[Any]:
        """Multi-row `INSERT ... ON CONFLICT DO NOTHING RETURNING <returning>`: the
        returned column of the rows actually inserted."""
        out: list[Any] = []
        for start in range(0, len(rows), ROWS_PER_INSERT):
            chunk = rows[start : start + ROWS_PER_INSERT]
            sql = self._insert_ignore_sql(table, tuple(columns), len(chunk), returning)
            flat = tuple(itertools.chain.from_iterable(chunk))
            out.extend(row[0] for row in await conn.exec_driver_sql(sql, flat))
        return out

    @functools.lru_cache(maxsize=16)  # noqa: B019 - two codecs, alive for the process
    def _insert_ignore_sql(
        self, table: str, columns: tuple[str, ...], count: int, returning: str
    ) -> str:
        """The statement for `count` rows (built once: 5 us a row on PostgreSQL)."""
        width = len(columns)
        groups = ", ".join(f"({self.params(width, 1 + i * width)})" for i in range(count))
        return (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES {groups} "
            f"ON CONFLICT DO NOTHING RETURNING {returning}"
        )


_CODECS = {name: Codec(name) for name in ("sqlite", "postgresql")}


def codec_for(dialect: str) -> Codec:
    return _CODECS[dialect]
