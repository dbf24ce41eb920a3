"""Wire schemas shared by the client and the API server.

Every request and response body of the orchestration API is one of these
pydantic models. `State` (in `prefray.states`) is part of this contract.
Create models accept a client-generated `id` so that a replayed request is
harmless (the server upserts).
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from prefray.states import ResultReference, State, StateType
from prefray.utilities.models import construct

__all__ = [
    "ClaimedTaskRun",
    "ConcurrencyLimit",
    "ConcurrencyLimitCreate",
    "Deployment",
    "DeploymentCreate",
    "DeploymentFilter",
    "DeploymentFlowRunCreate",
    "EmpiricalPolicy",
    "Flow",
    "FlowRun",
    "FlowRunCreate",
    "FlowRunFilter",
    "FlowRunSort",
    "FlowRunUpdate",
    "LeaseRenewal",
    "Log",
    "LogCreate",
    "LogFilter",
    "MAX_LOG_MESSAGE_BYTES",
    "OrchestrationResult",
    "ResumeRequest",
    "SetStateRequest",
    "SetStateStatus",
    "StateReport",
    "TaskRun",
    "TaskRunClaim",
    "TaskRunCreate",
    "TaskRunFilter",
    "TaskRunInput",
    "TaskRunSort",
    "TaskRunSubmit",
]

# A single log message larger than this is refused with a 422 naming the field.
MAX_LOG_MESSAGE_BYTES = 1_000_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmpiricalPolicy(_Strict):
    """How a run is retried; the server reads it when a run fails."""

    retries: int = Field(default=0, ge=0)
    # seconds before each retry: a number, or a list indexed by attempt (last repeats)
    retry_delay: float | list[float] = 0.0
    retry_jitter_factor: float | None = Field(default=None, ge=0)

    @field_validator("retry_delay")
    @classmethod
    def _non_negative(cls, value: float | list[float]) -> float | list[float]:
        delays = value if isinstance(value, list) else [value]
        if any(d < 0 for d in delays):
            raise ValueError("retry delays must be >= 0 seconds")
        if isinstance(value, list) and len(value) > 50:
            raise ValueError("at most 50 retry delays may be given")
        return value


class Flow(BaseModel):
    id: uuid.UUID
    name: str
    created: dt.datetime


class FlowRunCreate(_Strict):
    id: uuid.UUID | None = None
    name: str | None = None
    flow_name: str = Field(min_length=1)
    parameters: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    parent_task_run_id: uuid.UUID | None = None
    empirical_policy: EmpiricalPolicy = Field(default_factory=EmpiricalPolicy)
    state: State | None = None  # initial state; Pending when omitted
    # where the flow can be loaded from to run by id in a fresh process
    entrypoint: str | None = None
    deployment_id: uuid.UUID | None = None
    work_queue_name: str | None = None


class FlowRun(BaseModel):
    id: uuid.UUID
    name: str
    flow_id: uuid.UUID | None = None
    flow_name: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    parent_task_run_id: uuid.UUID | None = None
    empirical_policy: EmpiricalPolicy = Field(default_factory=EmpiricalPolicy)
    state: State | None = None
    state_type: StateType | None = None
    state_name: str | None = None
    run_count: int = 0
    expected_start_time: dt.datetime | None = None
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    total_run_time: float = 0.0
    entrypoint: str | None = None
    deployment_id: uuid.UUID | None = None
    work_queue_name: str | None = None
    infrastructure_pid: str | None = None  # "host:pid" of the process running it
    created: dt.datetime | None = None
    updated: dt.datetime | None = None


class TaskRunInput(_Strict):
    """An upstream dependency of a task run (another task run's result)."""

    input_type: Literal["task_run", "parameter", "constant"] = "task_run"
    id: uuid.UUID | None = None


class TaskRunCreate(_Strict):
    id: uuid.UUID | None = None
    name: str = Field(min_length=1)
    flow_run_id: uuid.UUID | None = None  # None for an autonomous task run
    task_key: str = Field(min_length=1)
    dynamic_key: str = Field(min_length=1)
    cache_key: str | None = None
    cache_expiration: dt.datetime | None = None
    tags: list[str] = Field(default_factory=list)
    task_inputs: dict[str, list[TaskRunInput]] = Field(default_factory=dict)
    empirical_policy: EmpiricalPolicy = Field(default_factory=EmpiricalPolicy)
    state: State | None = None  # initial state; Pending when omitted
    # the transitions that followed the initial state, in order (a batch that
    # carries a run's whole short life as one item); the server applies them as
    # if each were reported on its own
    states: list[State] | None = Field(default=None, max_length=100)

    def to_run(self) -> TaskRun:
        """The run this creation makes, as the server will store it (built
        locally: the engine need not wait for the server's answer)."""
        state = self.state
        return construct(
            TaskRun,
            id=self.id,
            name=self.name,
            flow_run_id=self.flow_run_id,
            task_key=self.task_key,
            dynamic_key=self.dynamic_key,
            cache_key=None,
            cache_expiration=None,
            tags=self.tags,
            task_inputs=self.task_inputs,
            empirical_policy=self.empirical_policy,
            state=state,
            state_type=state.type if state else None,
            state_name=state.name if state else None,
            run_count=0,
            total_run_time=0.0,
        )


class TaskRun(BaseModel):
    id: uuid.UUID
    name: str
    flow_run_id: uuid.UUID | None = None
    task_key: str
    dynamic_key: str
    cache_key: str | None = None
    cache_expiration: dt.datetime | None = None
    tags: list[str] = Field(default_factory=list)
    task_inputs: dict[str, list[TaskRunInput]] = Field(default_factory=dict)
    empirical_policy: EmpiricalPolicy = Field(default_factory=EmpiricalPolicy)
    state: State | None = None
    state_type: StateType | None = None
    state_name: str | None = None
    run_count: int = 0
    expected_start_time: dt.datetime | None = None
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    total_run_time: float = 0.0
    created: dt.datetime | None = None
    updated: dt.datetime | None = None

    def to_create(self, state: State | None = None) -> TaskRunCreate:
        """The creation request that makes this run (with `state` as its initial
        state); replaying it is harmless, since creation is an upsert."""
        return construct(
            TaskRunCreate,
            id=self.id,
            name=self.name,
            flow_run_id=self.flow_run_id,
            task_key=self.task_key,
            dynamic_key=self.dynamic_key,
            cache_key=None,
            cache_expiration=None,
            tags=list(self.tags),
            task_inputs=self.task_inputs,
            empirical_policy=self.empirical_policy,
            state=state,
        )


class SetStateStatus(str, enum.Enum):
    ACCEPT = "ACCEPT"  # the proposed state is now the run's state
    REJECT = "REJECT"  # refused; `state` is the state the run is in (maybe a new one)
    WAIT = "WAIT"  # not yet; propose again after `delay_seconds`
    ABORT = "ABORT"  # the run must not proceed at all (e.g. it was cancelled)


class OrchestrationResult(BaseModel):
    status: SetStateStatus
    state: State | None = None
    reason: str | None = None
    delay_seconds: float | None = None


class SetStateRequest(_Strict):
    state: State
    force: bool = False


class StateReport(_Strict):
    """One task-run transition in a batch (what Ray workers and the driver send)."""

    task_run_id: uuid.UUID
    state: State
    force: bool = False


class ResumeRequest(_Strict):
    run_input: dict[str, Any] | None = None


class LogCreate(_Strict):
    name: str = "prefray"
    level: int = Field(ge=0, le=100)
    message: str
    timestamp: dt.datetime
    flow_run_id: uuid.UUID | None = None
    task_run_id: uuid.UUID | None = None

    @field_validator("message")
    @classmethod
    def _bounded(cls, value: str) -> str:
        if len(value.encode("utf-8", "replace")) > MAX_LOG_MESSAGE_BYTES:
            raise ValueError(
                f"log message is larger than {MAX_LOG_MESSAGE_BYTES} bytes; "
                "split it or log a summary"
            )
        return value


class Log(BaseModel):
    id: uuid.UUID | int
    name: str
    level: int
    message: str
    timestamp: dt.datetime
    flow_run_id: uuid.UUID | None = None
    task_run_id: uuid.UUID | None = None


class FlowRunSort(str, enum.Enum):
    START_TIME_DESC = "START_TIME_DESC"
    START_TIME_ASC = "START_TIME_ASC"
    CREATED_DESC = "CREATED_DESC"
    CREATED_ASC = "CREATED_ASC"
    NAME_ASC = "NAME_ASC"


TaskRunSort = FlowRunSort


class FlowRunFilter(_Strict):
    ids: list[uuid.UUID] | None = None
    state_types: list[StateType] | None = None
    state_names: list[str] | None = None
    name: str | None = None  # substring match
    flow_name: str | None = None
    tags: list[str] | None = None  # runs carrying all of these
    parent_task_run_id: uuid.UUID | None = None
    start_time_after: dt.datetime | None = None
    start_time_before: dt.datetime | None = None
    expected_start_time_before: dt.datetime | None = None
    deployment_id: uuid.UUID | None = None
    sort: FlowRunSort = FlowRunSort.CREATED_DESC
    limit: int = Field(default=200, ge=1, le=10_000)
    offset: int = Field(default=0, ge=0)


class TaskRunFilter(_Strict):
    ids: list[uuid.UUID] | None = None
    flow_run_id: uuid.UUID | None = None
    state_types: list[StateType] | None = None
    state_names: list[str] | None = None
    name: str | None = None
    task_key: str | None = None
    tags: list[str] | None = None
    sort: TaskRunSort = TaskRunSort.CREATED_ASC
    limit: int = Field(default=200, ge=1, le=50_000)
    offset: int = Field(default=0, ge=0)


class LogFilter(_Strict):
    flow_run_id: uuid.UUID | None = None
    task_run_id: uuid.UUID | None = None
    level_ge: int | None = None
    limit: int = Field(default=1000, ge=1, le=50_000)
    offset: int = Field(default=0, ge=0)


# tag concurrency limits (issue 5) ---------------------------------------------
class ConcurrencyLimitCreate(_Strict):
    """At most `concurrency_limit` task runs carrying `tag` run at once (0: none may run)."""

    tag: str = Field(min_length=1, max_length=200)
    concurrency_limit: int = Field(ge=0, le=1_000_000)


class ConcurrencyLimit(BaseModel):
    id: uuid.UUID
    tag: str
    concurrency_limit: int
    active_slots: list[uuid.UUID] = Field(default_factory=list)  # task runs holding a slot
    created: dt.datetime | None = None
    updated: dt.datetime | None = None


# autonomous task runs and task servers (issue 5) -------------------------------
class TaskRunSubmit(_Strict):
    """An autonomous task run to queue: created Scheduled; its parameters live in
    result storage and `parameters` is the reference to them."""

    task_run: TaskRunCreate
    parameters: ResultReference


class TaskRunClaim(_Strict):
    """A task server asking for up to `limit` queued runs of the given task keys."""

    task_keys: list[str] = Field(min_length=1, max_length=1_000)
    worker: str = Field(min_length=1, max_length=200)
    limit: int = Field(default=1, ge=1, le=1_000)
    lease_seconds: float = Field(default=30.0, gt=0, le=86_400)


class ClaimedTaskRun(BaseModel):
    """A run a task server now owns (Pending, leased), with where its parameters are."""

    task_run: TaskRun
    parameters: ResultReference | None = None


class LeaseRenewal(_Strict):
    """Extend the leases a task server holds; the answer lists the ids it still holds."""

    task_run_ids: list[uuid.UUID] = Field(max_length=10_000)
    worker: str = Field(min_length=1, max_length=200)
    lease_seconds: float = Field(default=30.0, gt=0, le=86_400)


# deployments (issue 5) -----------------------------------------------------------
class DeploymentCreate(_Strict):
    """Register (or update, by `flow_name` + `name`) a flow to run by id later."""

    name: str = Field(min_length=1)
    flow_name: str = Field(min_length=1)
    # "path/to/file.py:flow_fn" (relative to `path`) or "package.module:flow_fn"
    entrypoint: str = Field(pattern=r"^[^:]+:[A-Za-z_][A-Za-z0-9_.]*$")
    path: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    parameter_openapi_schema: dict[str, Any] | None = None
    tags: list[str] = Field(default_factory=list)
    description: str | None = None
    work_queue_name: str | None = None


class Deployment(BaseModel):
    id: uuid.UUID
    name: str
    flow_name: str
    flow_id: uuid.UUID | None = None
    entrypoint: str
    path: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    parameter_openapi_schema: dict[str, Any] | None = None
    tags: list[str] = Field(default_factory=list)
    description: str | None = None
    work_queue_name: str | None = None
    created: dt.datetime | None = None
    updated: dt.datetime | None = None


class DeploymentFilter(_Strict):
    flow_name: str | None = None
    name: str | None = None
    limit: int = Field(default=200, ge=1, le=10_000)
    offset: int = Field(default=0, ge=0)


class DeploymentFlowRunCreate(_Strict):
    """A flow run of a deployment: its parameters override the deployment's defaults."""

    id: uuid.UUID | None = None
    name: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] | None = None  # default: the deployment's tags
    parent_task_run_id: uuid.UUID | None = None
    scheduled_time: dt.datetime | None = None  # default: now
    work_queue_name: str | None = None


class FlowRunUpdate(_Strict):
    """Fields a worker or the engine may set on an existing flow run."""

    empirical_policy: EmpiricalPolicy | None = None
    infrastructure_pid: str | None = None
