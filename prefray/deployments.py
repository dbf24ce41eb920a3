"""Deployments: a flow registered by entrypoint, with default parameters, so that
its runs can be created by name and run by id in a fresh process (a worker).

>>> deployment = etl.to_deployment("nightly", parameters={"day": "today"}).apply()
>>> run = run_deployment("etl/nightly", parameters={"day": "2024-01-01"}, timeout=0)

`run_deployment` called inside a flow links the new run to the caller as a
subflow (a task run of the caller stands for it), and by default waits for
the run to finish; `timeout=0` returns as soon as it is created.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefray.context import FlowRunContext
from prefray.schemas import Deployment, FlowRun, TaskRunCreate
from prefray.states import Pending, Running, State

if TYPE_CHECKING:
    from prefray.flows import Flow

__all__ = ["FlowDeployment", "deployment_for_flow", "run_deployment"]


@dataclasses.dataclass
class FlowDeployment:
    """A deployment ready to register with `apply()` (what `Flow.to_deployment` returns)."""

    name: str
    flow_name: str
    entrypoint: str
    path: str | None = None
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    tags: list[str] = dataclasses.field(default_factory=list)
    description: str | None = None
    parameter_openapi_schema: dict[str, Any] | None = None

    def apply(self) -> Deployment:
        """Register (or update) the deployment; the stored `Deployment`."""
        from prefray.client import get_client

        with get_client(sync_client=True) as client:
            return client.create_deployment(
                self.flow_name,
                self.name,
                self.entrypoint,
                path=self.path,
                parameters=self.parameters,
                parameter_openapi_schema=self.parameter_openapi_schema,
                tags=self.tags,
                description=self.description,
            )


def deployment_for_flow(
    flow: Flow,
    name: str,
    *,
    parameters: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    description: str | None = None,
    entrypoint: str | None = None,
) -> FlowDeployment:
    """A `FlowDeployment` of `flow`; the entrypoint defaults to the file defining it."""
    if not name or "/" in name:
        raise ValueError(f"deployment name {name!r} must be non-empty and contain no '/'")
    if entrypoint is None:
        entrypoint = _entrypoint_of(flow)
    _check_parameters(flow, parameters or {})
    from prefray.utilities.callables import jsonable_parameters

    return FlowDeployment(
        name=name,
        flow_name=flow.name,
        entrypoint=entrypoint,
        path=os.getcwd(),
        parameters=jsonable_parameters(dict(parameters or {})),
        tags=sorted(set(tags or ()) | set(flow.tags)),
        description=description or flow.description,
        parameter_openapi_schema=_parameter_schema(flow),
    )


def _entrypoint_of(flow: Flow) -> str:
    source = inspect.getsourcefile(flow.fn)
    qualname = flow.fn.__qualname__
    if source is None or "<locals>" in qualname:
        raise ValueError(
            f"flow {flow.name!r} is not defined at the top level of a file, so a fresh "
            "process cannot load it; define it at module level or pass entrypoint="
        )
    return f"{Path(source).resolve()}:{qualname}"


def _check_parameters(flow: Flow, parameters: dict[str, Any]) -> None:
    signature = inspect.signature(flow.fn)
    takes_any = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    unknown = set(parameters) - set(signature.parameters)
    if unknown and not takes_any:
        raise ValueError(
            f"flow {flow.name!r} takes no parameter(s) {', '.join(sorted(unknown))}; "
            f"it takes: {', '.join(signature.parameters) or 'none'}"
        )


def _parameter_schema(flow: Flow) -> dict[str, Any] | None:
    from prefray.utilities.callables import _parameters_model

    try:
        return _parameters_model(flow.fn).model_json_schema()
    except Exception:  # a type pydantic cannot describe: validated in the run anyway
        return None


# running ---------------------------------------------------------------------------
def run_deployment(
    name: str | uuid.UUID,
    parameters: dict[str, Any] | None = None,
    *,
    scheduled_time: dt.datetime | None = None,
    timeout: float | None = None,
    poll_interval: float = 2.0,
    tags: list[str] | None = None,
    flow_run_name: str | None = None,
    as_subflow: bool = True,
) -> FlowRun:
    """Create a Scheduled flow run of a deployment ("FLOW/NAME" or its id), and wait
    up to `timeout` seconds (None: forever, 0: not at all) for it to finish; the
    flow run as last read. Inside a flow it is linked as a subflow of the caller.
    """
    from prefray.client import get_client

    with get_client(sync_client=True) as client:
        deployment = _read_deployment(client, name)
        link = _link_to_parent(deployment) if as_subflow else None
        run = client.create_flow_run_from_deployment(
            deployment.id,
            parameters=parameters,
            name=flow_run_name,
            tags=tags,
            parent_task_run_id=link,
            scheduled_time=scheduled_time,
            id=uuid.uuid4(),
        )
        if timeout == 0:
            return run
        run = _wait_for_final(client, run, timeout, poll_interval)
    if link is not None and run.state is not None and run.state.is_final():
        _mirror(link, run.state)
    return run


def _read_deployment(client: Any, name: str | uuid.UUID) -> Deployment:
    if isinstance(name, uuid.UUID):
        return client.read_deployment(name)
    try:
        return client.read_deployment(uuid.UUID(name))
    except ValueError:
        return client.read_deployment_by_name(name)


def _link_to_parent(deployment: Deployment) -> uuid.UUID | None:
    from prefray.engine.reporting import get_state_reporter

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None or "book" not in ctx.extra:
        return None
    book = ctx.extra["book"]
    task_key = f"{deployment.flow_name}/{deployment.name}-deployment"
    index = book.next_index(task_key)
    link = uuid.uuid4()
    reporter = get_state_reporter()
    reporter.create_task_run(
        TaskRunCreate(
            id=link,
            name=f"{deployment.flow_name}/{deployment.name}-{index}",
            flow_run_id=ctx.flow_run.id,
            task_key=task_key,
            dynamic_key=book.dynamic_key(index),
            state=Pending(),
        )
    )
    reporter.report(link, Running())
    reporter.flush(ctx.settings.api_request_timeout)  # the child refers to it
    return link


def _wait_for_final(client: Any, run: FlowRun, timeout: float | None, interval: float) -> FlowRun:
    deadline = None if timeout is None else time.monotonic() + timeout
    while run.state is None or not run.state.is_final():
        if deadline is not None and time.monotonic() >= deadline:
            return run
        left = interval if deadline is None else min(interval, deadline - time.monotonic())
        time.sleep(max(0.0, left))
        run = client.read_flow_run(run.id)
    return run


def _mirror(link: uuid.UUID, state: State) -> None:
    from prefray.engine.reporting import get_state_reporter

    mirror = State(type=state.type, name=state.name, message=state.message, data=state.data)
    get_state_reporter().report(link, mirror)
