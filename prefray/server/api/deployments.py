"""Deployment routes, and the flow-run fields workers set (issue 5).

POST   /api/deployments/                      upsert by (flow_name, name)
GET    /api/deployments/{id}
GET    /api/deployments/name/{flow_name}/{name}
POST   /api/deployments/filter
DELETE /api/deployments/{id}
POST   /api/deployments/{id}/create_flow_run  a Scheduled flow run
PATCH  /api/flow_runs/{id}                    empirical_policy, infrastructure_pid
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status
from pydantic import TypeAdapter

from prefray.exceptions import ObjectNotFound
from prefray.schemas import (
    Deployment,
    DeploymentCreate,
    DeploymentFilter,
    DeploymentFlowRunCreate,
    FlowRun,
    FlowRunUpdate,
    OrchestrationResult,
)
from prefray.server.api._common import DB, json_response, lock_rows
from prefray.server.api._runs import run_not_found
from prefray.server.database import deployments as store
from prefray.server.database.transitions import FLOW_RUNS

__all__ = ["flow_run_updates", "router"]

router = APIRouter(prefix="/api/deployments", tags=["deployments"])
flow_run_updates = APIRouter(prefix="/api/flow_runs", tags=["flow runs"])

_DEPLOYMENT = TypeAdapter(Deployment)
_DEPLOYMENTS = TypeAdapter(list[Deployment])
_RUN = TypeAdapter(FlowRun)
_RESULT = TypeAdapter(OrchestrationResult)


def _not_found(deployment_id: uuid.UUID) -> ObjectNotFound:
    return ObjectNotFound(f"deployment {deployment_id} not found")


@router.post("/", response_model=Deployment, status_code=status.HTTP_201_CREATED)
async def create_deployment(body: DeploymentCreate, db: DB) -> Response:
    """Register a deployment; an existing one with the same flow and name is updated."""
    async with db.write() as conn:
        deployment = await store.upsert_deployment(conn, db.dialect, body)
    return json_response(_DEPLOYMENT, deployment, 201)


@router.post("/filter", response_model=list[Deployment])
async def read_deployments(db: DB, body: DeploymentFilter | None = None) -> Response:
    async with db.read() as conn:
        found = await store.read_deployments(conn, body or DeploymentFilter())
    return json_response(_DEPLOYMENTS, found)


@router.get("/name/{flow_name}/{name}", response_model=Deployment)
async def read_deployment_by_name(flow_name: str, name: str, db: DB) -> Response:
    async with db.read() as conn:
        deployment = await store.read_deployment_by_name(conn, flow_name, name)
    if deployment is None:
        raise ObjectNotFound(
            f"deployment {flow_name}/{name} not found; register it with "
            f"`prefray deploy path/to/file.py:flow_fn --name {name}`"
        )
    return json_response(_DEPLOYMENT, deployment)


@router.get("/{id}", response_model=Deployment)
async def read_deployment(id: uuid.UUID, db: DB) -> Response:
    async with db.read() as conn:
        deployment = await store.read_deployment(conn, id)
    if deployment is None:
        raise _not_found(id)
    return json_response(_DEPLOYMENT, deployment)


@router.delete("/{id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_deployment(id: uuid.UUID, db: DB) -> Response:
    async with db.write() as conn:
        deleted = await store.delete_deployment(conn, id)
    if not deleted:
        raise _not_found(id)
    return Response(status_code=204)


@router.post("/{id}/create_flow_run", response_model=FlowRun, status_code=201)
async def create_flow_run_from_deployment(
    id: uuid.UUID, body: DeploymentFlowRunCreate, db: DB
) -> Response:
    """A Scheduled flow run of the deployment; replaying a client `id` returns it."""
    async with db.write() as conn:
        deployment = await store.read_deployment(conn, id)
        if deployment is None:
            raise _not_found(id)
        run, created = await store.create_deployment_flow_run(conn, db.dialect, deployment, body)
    return json_response(_RUN, run, 201 if created else 200)


@flow_run_updates.patch("/{id}", response_model=FlowRun)
async def update_flow_run(id: uuid.UUID, body: FlowRunUpdate, db: DB) -> Response:
    async with db.write() as conn:
        run = await store.update_flow_run(conn, id, body)
    if run is None:
        raise run_not_found(FLOW_RUNS, id)
    return json_response(_RUN, run)


@flow_run_updates.post("/{id}/claim", response_model=OrchestrationResult)
async def claim_flow_run(id: uuid.UUID, db: DB) -> Response:
    """Scheduled -> Pending for the worker that will run it; REJECT when the run is
    not Scheduled (another worker claimed it first)."""
    async with db.write() as conn:
        result = await store.claim_flow_run(conn, id, lock_rows=lock_rows(db))
    if result is None:
        raise run_not_found(FLOW_RUNS, id)
    return json_response(_RESULT, result)
