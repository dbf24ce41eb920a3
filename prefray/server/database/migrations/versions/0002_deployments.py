"""deployments, and where a flow run's process runs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import prefray.server.database.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployment",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("flow_name", sa.String(), nullable=False),
        sa.Column("flow_id", sa.Uuid(), nullable=True),
        sa.Column("entrypoint", sa.String(), nullable=False),
        sa.Column("path", sa.String(), nullable=True),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("parameter_openapi_schema", sa.JSON(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("work_queue_name", sa.String(), nullable=True),
        sa.Column(
            "created", prefray.server.database.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "updated", prefray.server.database.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(["flow_id"], ["flow.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("flow_name", "name", name="uq_deployment_flow_name_name"),
    )
    with op.batch_alter_table("flow_run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("infrastructure_pid", sa.String(), nullable=True))
        batch_op.create_index("ix_flow_run_deployment_id", ["deployment_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("flow_run", schema=None) as batch_op:
        batch_op.drop_index("ix_flow_run_deployment_id")
        batch_op.drop_column("infrastructure_pid")
    op.drop_table("deployment")
