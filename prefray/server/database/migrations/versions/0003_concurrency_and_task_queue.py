"""tag concurrency limits and slots; the queue of autonomous task runs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 11:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import prefray.server.database.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_UTC = prefray.server.database.models.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "concurrency_limit",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tag", sa.String(), nullable=False),
        sa.Column("concurrency_limit", sa.Integer(), nullable=False),
        sa.Column("created", _UTC(timezone=True), nullable=False),
        sa.Column("updated", _UTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tag"),
    )
    op.create_table(
        "concurrency_slot",
        sa.Column("tag", sa.String(), nullable=False),
        sa.Column("task_run_id", sa.Uuid(), nullable=False),
        sa.Column("created", _UTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["task_run_id"], ["task_run.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tag", "task_run_id"),
    )
    op.create_index("ix_concurrency_slot_task_run_id", "concurrency_slot", ["task_run_id"])
    op.create_table(
        "task_run_queue",
        sa.Column("task_run_id", sa.Uuid(), nullable=False),
        sa.Column("task_key", sa.String(), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("claimed_by", sa.String(), nullable=True),
        sa.Column("lease_expires", _UTC(timezone=True), nullable=True),
        sa.Column("created", _UTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["task_run_id"], ["task_run.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("task_run_id"),
    )
    op.create_index("ix_task_run_queue_task_key", "task_run_queue", ["task_key", "created"])
    op.create_index("ix_task_run_queue_lease_expires", "task_run_queue", ["lease_expires"])


def downgrade() -> None:
    op.drop_index("ix_task_run_queue_lease_expires", table_name="task_run_queue")
    op.drop_index("ix_task_run_queue_task_key", table_name="task_run_queue")
    op.drop_table("task_run_queue")
    op.drop_index("ix_concurrency_slot_task_run_id", table_name="concurrency_slot")
    op.drop_table("concurrency_slot")
    op.drop_table("concurrency_limit")
