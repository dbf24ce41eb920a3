"""Storage for deployments, their flow runs, and worker-set flow-run fields."""

from __future__ import annotations

import os
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from prefray.schemas import (
    Deployment,
    DeploymentCreate,
    DeploymentFilter,
    DeploymentFlowRunCreate,
    FlowRun,
    FlowRunCreate,
    FlowRunUpdate,
    OrchestrationResult,
    SetStateStatus,
)
from prefray.server.database import flow_runs
from prefray.server.database.models import DeploymentORM, FlowORM
from prefray.server.database.queries import insert_ignore, insert_or_update
from prefray.server.database.transitions import FLOW_RUNS, Proposal, apply_proposals
from prefray.states import Pending, Scheduled, StateType, now

__all__ = [
    "claim_flow_run",
    "create_deployment_flow_run",
    "delete_deployment",
    "read_deployment",
    "read_deployment_by_name",
    "read_deployments",
    "run_entrypoint",
    "update_flow_run",
    "upsert_deployment",
]

_DEPLOYMENTS = DeploymentORM.__table__
_FLOWS = FlowORM.__table__
_RUNS = FLOW_RUNS.run
_UPDATABLE = ("entrypoint", "path", "parameters", "parameter_openapi_schema", "tags",
              "description", "work_queue_name", "updated")  # fmt: skip


async def upsert_deployment(
    conn: AsyncConnection, dialect: str, data: DeploymentCreate
) -> Deployment:
    """Create the deployment, or update the one with the same flow name and name."""
    await conn.execute(
        insert_ignore(dialect, _FLOWS).values(id=uuid.uuid4(), name=data.flow_name, created=now())
    )
    flow_id = (
        await conn.execute(sa.select(_FLOWS.c.id).where(_FLOWS.c.name == data.flow_name))
    ).scalar_one()
    when = now()
    values: dict[str, Any] = {
        **data.model_dump(mode="json"),
        "id": uuid.uuid4(),
        "flow_id": flow_id,
        "created": when,
        "updated": when,
    }
    statement = insert_or_update(dialect, _DEPLOYMENTS, ["flow_name", "name"], _UPDATABLE)
    await conn.execute(statement.values(values))
    stored = await read_deployment_by_name(conn, data.flow_name, data.name)
    assert stored is not None
    return stored


async def read_deployment(conn: AsyncConnection, deployment_id: uuid.UUID) -> Deployment | None:
    query = sa.select(_DEPLOYMENTS).where(_DEPLOYMENTS.c.id == deployment_id)
    row = (await conn.execute(query)).first()
    return Deployment.model_validate(row._asdict()) if row is not None else None


async def read_deployment_by_name(
    conn: AsyncConnection, flow_name: str, name: str
) -> Deployment | None:
    c = _DEPLOYMENTS.c
    row = (
        await conn.execute(sa.select(_DEPLOYMENTS).where(c.flow_name == flow_name, c.name == name))
    ).first()
    return Deployment.model_validate(row._asdict()) if row is not None else None


async def read_deployments(conn: AsyncConnection, flt: DeploymentFilter) -> list[Deployment]:
    c = _DEPLOYMENTS.c
    where = []
    if flt.flow_name is not None:
        where.append(c.flow_name == flt.flow_name)
    if flt.name is not None:
        where.append(c.name == flt.name)
    query = (
        sa.select(_DEPLOYMENTS)
        .where(*where)
        .order_by(c.flow_name, c.name)
        .limit(flt.limit)
        .offset(flt.offset)
    )
    return [Deployment.model_validate(row._asdict()) for row in await conn.execute(query)]


async def delete_deployment(conn: AsyncConnection, deployment_id: uuid.UUID) -> bool:
    result = await conn.execute(sa.delete(_DEPLOYMENTS).where(_DEPLOYMENTS.c.id == deployment_id))
    return result.rowcount > 0


def run_entrypoint(deployment: Deployment) -> str:
    """The entrypoint a fresh process loads: a relative file path made absolute."""
    target, _, name = deployment.entrypoint.rpartition(":")
    is_file = target.endswith(".py") or "/" in target or os.sep in target
    if is_file and deployment.path and not os.path.isabs(target):
        target = os.path.join(deployment.path, target)
    return f"{target}:{name}"


async def create_deployment_flow_run(
    conn: AsyncConnection, dialect: str, deployment: Deployment, data: DeploymentFlowRunCreate
) -> tuple[FlowRun, bool]:
    """A Scheduled flow run of `deployment` (its parameters over the deployment's)."""
    state = Scheduled(scheduled_time=data.scheduled_time or now())
    create = FlowRunCreate(
        id=data.id,
        name=data.name,
        flow_name=deployment.flow_name,
        parameters={**deployment.parameters, **data.parameters},
        tags=data.tags if data.tags is not None else list(deployment.tags),
        parent_task_run_id=data.parent_task_run_id,
        state=state,
        entrypoint=run_entrypoint(deployment),
        deployment_id=deployment.id,
        work_queue_name=data.work_queue_name or deployment.work_queue_name,
    )
    return await flow_runs.create_flow_run(conn, dialect, create)


async def update_flow_run(
    conn: AsyncConnection, run_id: uuid.UUID, data: FlowRunUpdate
) -> FlowRun | None:
    values: dict[str, Any] = {}
    if data.empirical_policy is not None:
        values["empirical_policy"] = data.empirical_policy.model_dump(mode="json")
    if data.infrastructure_pid is not None:
        values["infrastructure_pid"] = data.infrastructure_pid
    if values:
        values["updated"] = now()
        await conn.execute(sa.update(_RUNS).where(_RUNS.c.id == run_id).values(values))
    return await flow_runs.read_flow_run(conn, run_id)


async def claim_flow_run(
    conn: AsyncConnection, run_id: uuid.UUID, *, lock_rows: bool
) -> OrchestrationResult | None:
    """Move a Scheduled run to Pending; REJECT if it is not Scheduled. The row is
    locked first (PostgreSQL), so of two concurrent claims exactly one wins."""
    query = sa.select(_RUNS.c.state_type, _RUNS.c.state).where(_RUNS.c.id == run_id)
    if lock_rows:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    if row.state_type != StateType.SCHEDULED.value:
        return OrchestrationResult(
            status=SetStateStatus.REJECT,
            reason=f"flow run {run_id} is {row.state_type}, not Scheduled: it was claimed already",
        )
    state = Pending(message="Claimed by a worker.")
    [result] = await apply_proposals(
        conn, FLOW_RUNS, [Proposal(run_id, state)], lock_rows=lock_rows
    )
    return result
