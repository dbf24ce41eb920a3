"""Client calls for deployments and worker-set flow-run fields (issue 5).

`DeploymentOperations` is mixed into `Operations`, so both clients have these
methods; like the others, each builds a request spec and hands it to `_execute`.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter

from prefray.client._routes import Call, IdLike, run_id
from prefray.schemas import (
    Deployment,
    DeploymentCreate,
    DeploymentFilter,
    DeploymentFlowRunCreate,
    EmpiricalPolicy,
    FlowRun,
    FlowRunUpdate,
    OrchestrationResult,
)

__all__ = ["DeploymentOperations"]

_DEPLOYMENT = TypeAdapter(Deployment)
_DEPLOYMENTS = TypeAdapter(list[Deployment])
_FLOW_RUN = TypeAdapter(FlowRun)
_RESULT = TypeAdapter(OrchestrationResult)


def _body(model: Any) -> bytes:
    return model.model_dump_json().encode()


def _by_name_path(name: str) -> str:
    flow_name, sep, deployment_name = name.partition("/")
    if not sep or not flow_name or not deployment_name:
        raise ValueError(
            f"deployment name {name!r} must be 'FLOW_NAME/DEPLOYMENT_NAME', "
            "e.g. 'etl/nightly'; `prefray deployment ls` lists them"
        )
    quote = urllib.parse.quote
    return f"/api/deployments/name/{quote(flow_name, safe='')}/{quote(deployment_name, safe='')}"


class DeploymentOperations:
    """Deployment calls; `_execute` comes from `Operations`."""

    def _execute(self, spec: Call[Any]) -> Any:  # pragma: no cover - provided by Operations
        raise NotImplementedError

    def create_deployment(
        self,
        flow_name: str,
        name: str,
        entrypoint: str,
        *,
        path: str | None = None,
        parameters: dict[str, Any] | None = None,
        parameter_openapi_schema: dict[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        description: str | None = None,
        work_queue_name: str | None = None,
    ) -> Any:
        """Register a deployment (an existing one with this flow and name is updated)."""
        body = DeploymentCreate(
            name=name,
            flow_name=flow_name,
            entrypoint=entrypoint,
            path=path,
            parameters=dict(parameters or {}),
            parameter_openapi_schema=parameter_openapi_schema,
            tags=list(tags or ()),
            description=description,
            work_queue_name=work_queue_name,
        )
        return self._execute(
            Call("POST", "/api/deployments/", _DEPLOYMENT.validate_json, _body(body))
        )

    def read_deployment(self, id: IdLike) -> Any:
        """The deployment; `ObjectNotFound` if there is none with that id."""
        return self._execute(
            Call("GET", f"/api/deployments/{run_id(id)}", _DEPLOYMENT.validate_json)
        )

    def read_deployment_by_name(self, name: str) -> Any:
        """The deployment named 'FLOW_NAME/DEPLOYMENT_NAME'."""
        return self._execute(Call("GET", _by_name_path(name), _DEPLOYMENT.validate_json))

    def read_deployments(self, **filters: Any) -> Any:
        """Deployments matching `DeploymentFilter` fields (`flow_name=`, `name=`, `limit=`)."""
        body = _body(DeploymentFilter(**filters))
        return self._execute(
            Call("POST", "/api/deployments/filter", _DEPLOYMENTS.validate_json, body)
        )

    def delete_deployment(self, id: IdLike) -> Any:
        """Delete a deployment (its flow runs stay)."""
        return self._execute(Call("DELETE", f"/api/deployments/{run_id(id)}", lambda content: None))

    def create_flow_run_from_deployment(
        self,
        deployment_id: IdLike,
        *,
        parameters: dict[str, Any] | None = None,
        name: str | None = None,
        tags: Sequence[str] | None = None,
        parent_task_run_id: IdLike | None = None,
        scheduled_time: dt.datetime | None = None,
        id: IdLike | None = None,
    ) -> Any:
        """A Scheduled flow run of the deployment; `parameters` override its defaults.

        A worker (`prefray worker start`) runs it once `scheduled_time` (default:
        now) has come; so does `python -m prefray.engine FLOW_RUN_ID`.
        """
        body = DeploymentFlowRunCreate(
            id=run_id(id) if id is not None else None,
            name=name,
            tags=list(tags) if tags is not None else None,
            parent_task_run_id=run_id(parent_task_run_id) if parent_task_run_id else None,
            scheduled_time=scheduled_time,
        )
        body = body.model_copy(update={"parameters": dict(parameters or {})})
        path = f"/api/deployments/{run_id(deployment_id)}/create_flow_run"
        return self._execute(Call("POST", path, _FLOW_RUN.validate_json, _body(body)))

    def update_flow_run(
        self,
        id: IdLike,
        *,
        empirical_policy: EmpiricalPolicy | None = None,
        infrastructure_pid: str | None = None,
    ) -> Any:
        """Set a flow run's retry policy or the process that runs it; the updated run."""
        body = FlowRunUpdate(
            empirical_policy=empirical_policy, infrastructure_pid=infrastructure_pid
        )
        path = f"/api/flow_runs/{run_id(id)}"
        return self._execute(Call("PATCH", path, _FLOW_RUN.validate_json, _body(body)))

    def claim_flow_run(self, id: IdLike) -> Any:
        """Scheduled -> Pending, for the one worker that will run it (REJECT otherwise)."""
        path = f"/api/flow_runs/{run_id(id)}/claim"
        return self._execute(Call("POST", path, _RESULT.validate_json))
