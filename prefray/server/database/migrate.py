"""Apply the schema migrations (Alembic, scripts shipped in the package) at startup.

Two servers may start at once on the same database (two drivers in embedded
mode): on SQLite a file lock next to the database file serializes them, on
PostgreSQL a transaction-scoped advisory lock does. The second one then finds
the schema at head and does nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from prefray.server.database.engine import Database

__all__ = ["MIGRATIONS_DIR", "migrate"]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# an arbitrary constant that names prefray's migration lock in PostgreSQL
_PG_LOCK_KEY = 7_351_902_114


async def migrate(db: Database) -> None:
    """Bring the schema to the newest revision (idempotent, safe to run concurrently)."""
    with _file_lock(db.sqlite_path):
        async with db.write() as conn:
            if not db.is_sqlite:
                await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})"))
            await conn.run_sync(_upgrade)


def _upgrade(connection: sa.Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


@contextlib.contextmanager
def _file_lock(db_path: Path | None) -> Iterator[None]:
    if db_path is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: BEGIN IMMEDIATE still serializes
        yield
        return
    lock_path = db_path.with_name(db_path.name + ".migrate.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        # blocking in a thread would be nicer, but migrations take milliseconds
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
