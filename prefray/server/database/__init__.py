"""Storage for the orchestration API: SQLAlchemy async, SQLite or PostgreSQL."""

from prefray.server.database.engine import Database
from prefray.server.database.migrate import migrate

__all__ = ["Database", "migrate"]
