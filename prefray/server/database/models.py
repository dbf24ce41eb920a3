"""The tables, as SQLAlchemy 2 declarative models.

The hot paths use the Core tables (`FlowRunORM.__table__`, ...) for bulk
inserts and updates; the ORM classes are the single place the schema is
written down (Alembic's migration mirrors them).

A run's current state is denormalized onto its row (`state_type`,
`state_name`, `state`) so that filters never join the history tables.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "Base",
    "ConcurrencyLimitORM",
    "ConcurrencySlotORM",
    "DeploymentORM",
    "FlowORM",
    "FlowRunInputORM",
    "FlowRunORM",
    "FlowRunStateORM",
    "LogORM",
    "TaskRunORM",
    "TaskRunQueueORM",
    "TaskRunStateORM",
    "UTCDateTime",
]


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {
        dt.datetime: UTCDateTime,
        uuid.UUID: sa.Uuid,
        dict[str, Any]: sa.JSON,
        list[Any]: sa.JSON,
    }


class _RunColumns:
    """Columns shared by flow runs and task runs."""

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    empirical_policy: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
    state_type: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    state_name: Mapped[str | None] = mapped_column(sa.String, nullable=True)
    run_count: Mapped[int] = mapped_column(default=0)
    expected_start_time: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    start_time: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    end_time: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    total_run_time: Mapped[float] = mapped_column(default=0.0)
    created: Mapped[dt.datetime] = mapped_column(default=_now)
    updated: Mapped[dt.datetime] = mapped_column(default=_now)


class FlowORM(Base):
    __tablename__ = "flow"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String, unique=True)
    created: Mapped[dt.datetime] = mapped_column(default=_now)


class FlowRunORM(_RunColumns, Base):
    __tablename__ = "flow_run"

    flow_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("flow.id"), nullable=True)
    flow_name: Mapped[str] = mapped_column(sa.String)
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    parent_task_run_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    entrypoint: Mapped[str | None] = mapped_column(sa.String, nullable=True)
    deployment_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    work_queue_name: Mapped[str | None] = mapped_column(sa.String, nullable=True)
    # "host:pid" of the process running this flow run (set by workers; issue 5)
    infrastructure_pid: Mapped[str | None] = mapped_column(sa.String, nullable=True)

    __table_args__ = (
        sa.Index("ix_flow_run_state_type", "state_type"),
        sa.Index("ix_flow_run_deployment_id", "deployment_id"),
        sa.Index("ix_flow_run_flow_name", "flow_name"),
        sa.Index("ix_flow_run_parent_task_run_id", "parent_task_run_id"),
        sa.Index("ix_flow_run_created", "created"),
    )


class TaskRunORM(_RunColumns, Base):
    __tablename__ = "task_run"

    flow_run_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("flow_run.id", ondelete="CASCADE"), nullable=True
    )
    task_key: Mapped[str] = mapped_column(sa.String)
    dynamic_key: Mapped[str] = mapped_column(sa.String)
    cache_key: Mapped[str | None] = mapped_column(sa.String, nullable=True)
    cache_expiration: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    task_inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (
        sa.UniqueConstraint(
            "flow_run_id", "task_key", "dynamic_key", name="uq_task_run_flow_run_task_key_dynamic"
        ),
        sa.Index("ix_task_run_state_type", "state_type"),
        sa.Index("ix_task_run_cache_key", "cache_key"),
        sa.Index("ix_task_run_created", "created"),
    )


class _StateColumns:
    # an integer key keeps the history in insertion order, cheaply
    seq: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    type: Mapped[str] = mapped_column(sa.String(16))
    name: Mapped[str | None] = mapped_column(sa.String, nullable=True)
    timestamp: Mapped[dt.datetime] = mapped_column()
    transition_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    state: Mapped[dict[str, Any]] = mapped_column()


class FlowRunStateORM(_StateColumns, Base):
    __tablename__ = "flow_run_state"

    flow_run_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("flow_run.id", ondelete="CASCADE"))
    __table_args__ = (
        sa.Index("ix_flow_run_state_run", "flow_run_id", "seq"),
        sa.Index("ix_flow_run_state_transition", "transition_id"),
    )


class TaskRunStateORM(_StateColumns, Base):
    __tablename__ = "task_run_state"

    task_run_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("task_run.id", ondelete="CASCADE"))
    __table_args__ = (
        sa.Index("ix_task_run_state_run", "task_run_id", "seq"),
        sa.Index("ix_task_run_state_transition", "transition_id"),
    )


class LogORM(Base):
    __tablename__ = "log"

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    name: Mapped[str] = mapped_column(sa.String)
    level: Mapped[int] = mapped_column()
    message: Mapped[str] = mapped_column(sa.Text)
    timestamp: Mapped[dt.datetime] = mapped_column()
    flow_run_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    task_run_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)

    __table_args__ = (
        sa.Index("ix_log_flow_run_id", "flow_run_id", "id"),
        sa.Index("ix_log_task_run_id", "task_run_id", "id"),
    )


class FlowRunInputORM(Base):
    __tablename__ = "flow_run_input"

    flow_run_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("flow_run.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(sa.String, primary_key=True)
    value: Mapped[Any] = mapped_column(sa.JSON)
    created: Mapped[dt.datetime] = mapped_column(default=_now)


class DeploymentORM(Base):
    """A flow registered by entrypoint, with default parameters, to run by id later."""

    __tablename__ = "deployment"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String)
    flow_name: Mapped[str] = mapped_column(sa.String)
    flow_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("flow.id"), nullable=True)
    entrypoint: Mapped[str] = mapped_column(sa.String)
    # the directory a relative entrypoint is resolved against
    path: Mapped[str | None] = mapped_column(sa.String, nullable=True)
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    parameter_openapi_schema: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    description: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    work_queue_name: Mapped[str | None] = mapped_column(sa.String, nullable=True)
    created: Mapped[dt.datetime] = mapped_column(default=_now)
    updated: Mapped[dt.datetime] = mapped_column(default=_now)

    __table_args__ = (
        sa.UniqueConstraint("flow_name", "name", name="uq_deployment_flow_name_name"),
    )


class ConcurrencyLimitORM(Base):
    """At most `concurrency_limit` task runs carrying `tag` in Running at once."""

    __tablename__ = "concurrency_limit"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tag: Mapped[str] = mapped_column(sa.String, unique=True)
    concurrency_limit: Mapped[int] = mapped_column()
    created: Mapped[dt.datetime] = mapped_column(default=_now)
    updated: Mapped[dt.datetime] = mapped_column(default=_now)


class ConcurrencySlotORM(Base):
    """One slot of a tag's limit, held by a Running task run.

    Inserted and deleted in the same transaction as the state change that takes
    or gives it back, so the count of rows per tag is the number running.
    """

    __tablename__ = "concurrency_slot"

    tag: Mapped[str] = mapped_column(sa.String, primary_key=True)
    task_run_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("task_run.id", ondelete="CASCADE"), primary_key=True
    )
    created: Mapped[dt.datetime] = mapped_column(default=_now)

    __table_args__ = (sa.Index("ix_concurrency_slot_task_run_id", "task_run_id"),)


class TaskRunQueueORM(Base):
    """An autonomous task run waiting for (or held by) a task server.

    `parameters` is the reference to the run's parameters in result storage;
    `claimed_by`/`lease_expires` say which server holds the run and until when.
    """

    __tablename__ = "task_run_queue"

    task_run_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("task_run.id", ondelete="CASCADE"), primary_key=True
    )
    task_key: Mapped[str] = mapped_column(sa.String)
    parameters: Mapped[dict[str, Any]] = mapped_column()
    claimed_by: Mapped[str | None] = mapped_column(sa.String, nullable=True)
    lease_expires: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    created: Mapped[dt.datetime] = mapped_column(default=_now)

    __table_args__ = (
        sa.Index("ix_task_run_queue_task_key", "task_key", "created"),
        sa.Index("ix_task_run_queue_lease_expires", "lease_expires"),
    )
