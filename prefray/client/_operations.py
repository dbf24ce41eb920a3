"""The client's methods, written once for both clients.

Each method builds a request spec (`_routes`) and hands it to `_execute`,
which the sync client runs to completion and the async client returns as a
coroutine. So on `SyncPrefrayClient` a method returns its answer, and on
`PrefrayClient` an awaitable of it: `Reply[T]` says exactly that.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Sequence
from typing import Any, Literal, TypeVar, Union, overload

from prefray.client import _limit_routes, _routes
from prefray.client._deployments import DeploymentOperations
from prefray.client._routes import Batch, Call, IdLike, run_id
from prefray.schemas import (
    ClaimedTaskRun,
    ConcurrencyLimit,
    EmpiricalPolicy,
    FlowRun,
    FlowRunCreate,
    Log,
    LogCreate,
    OrchestrationResult,
    StateReport,
    TaskRun,
    TaskRunCreate,
    TaskRunSubmit,
)
from prefray.states import State

T = TypeVar("T")
Reply = Union[T, Awaitable[T]]  # T on the sync client, Awaitable[T] on the async one


class Operations(DeploymentOperations):
    """Every call of the prefray API. Subclasses implement `_execute`."""

    def _execute(self, spec: Call[Any] | Batch[Any]) -> Any:
        raise NotImplementedError

    # meta ---------------------------------------------------------------------
    def health(self) -> Reply[dict[str, Any]]:
        """`{"status": "ok"}` when the API is up."""
        return self._execute(_routes.health())

    def api_version(self) -> Reply[dict[str, Any]]:
        """The server's `api_version` and `server_version`."""
        return self._execute(_routes.version())

    # flow runs ----------------------------------------------------------------
    def create_flow_run(
        self,
        flow_name: str,
        *,
        name: str | None = None,
        parameters: dict[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        parent_task_run_id: IdLike | None = None,
        empirical_policy: EmpiricalPolicy | None = None,
        state: State | None = None,
        id: IdLike | None = None,
        entrypoint: str | None = None,
        deployment_id: IdLike | None = None,
    ) -> Reply[FlowRun]:
        """Create a flow run (a replay with the same `id` returns the existing run)."""
        body = FlowRunCreate(
            id=run_id(id) if id is not None else None,
            name=name,
            flow_name=flow_name,
            tags=list(tags or ()),
            parent_task_run_id=run_id(parent_task_run_id) if parent_task_run_id else None,
            empirical_policy=empirical_policy or EmpiricalPolicy(),
            state=state,
            entrypoint=entrypoint,
            deployment_id=run_id(deployment_id) if deployment_id else None,
        )
        return self._execute(_routes.create_flow_run(body, parameters))

    def read_flow_run(self, id: IdLike) -> Reply[FlowRun]:
        """The flow run; `ObjectNotFound` if there is none with that id."""
        return self._execute(_routes.read_flow_run(id))

    def read_flow_runs(self, **filters: Any) -> Reply[list[FlowRun]]:
        """Flow runs matching `FlowRunFilter` fields (`state_types=`, `limit=`, ...)."""
        return self._execute(_routes.read_flow_runs(**filters))

    def set_flow_run_state(
        self, id: IdLike, state: State, force: bool = False
    ) -> Reply[OrchestrationResult]:
        """Propose a state; the answer says whether the server accepted it."""
        return self._execute(_routes.set_flow_run_state(id, state, force))

    def read_flow_run_states(self, id: IdLike) -> Reply[list[State]]:
        """The flow run's states, oldest first."""
        return self._execute(_routes.read_flow_run_states(id))

    def resume_flow_run(
        self, id: IdLike, run_input: dict[str, Any] | None = None
    ) -> Reply[OrchestrationResult]:
        """Resume a paused flow run (REJECT with a reason when it is not paused)."""
        return self._execute(_routes.resume_flow_run(id, run_input))

    def read_flow_run_input(self, id: IdLike, key: str) -> Reply[Any]:
        """A run input stored for the flow run under `key`."""
        return self._execute(_routes.read_flow_run_input(id, key))

    # task runs ----------------------------------------------------------------
    def create_task_run(self, task_run: TaskRunCreate) -> Reply[TaskRun]:
        """Create (or, on replay, return) one task run."""
        return self._execute(_routes.create_task_run(task_run))

    @overload
    def create_task_runs(
        self, task_runs: Sequence[TaskRunCreate], *, answer: Literal["full"] = "full"
    ) -> Reply[list[TaskRun]]: ...

    @overload
    def create_task_runs(
        self, task_runs: Sequence[TaskRunCreate], *, answer: Literal["minimal"]
    ) -> Reply[list[TaskRun | None]]: ...

    def create_task_runs(
        self, task_runs: Sequence[TaskRunCreate], *, answer: Literal["full", "minimal"] = "full"
    ) -> Reply[list[TaskRun]] | Reply[list[TaskRun | None]]:
        """Create many task runs in one request per 10,000; answers in request order.
        With `answer="minimal"`, a run created exactly as sent (new, every carried
        state written with it) is answered None: cheaper for both sides."""
        return self._execute(_routes.create_task_runs(task_runs, answer))

    def read_task_run(self, id: IdLike) -> Reply[TaskRun]:
        """The task run; `ObjectNotFound` if there is none with that id."""
        return self._execute(_routes.read_task_run(id))

    def read_task_runs(
        self, flow_run_id: IdLike | None = None, **filters: Any
    ) -> Reply[list[TaskRun]]:
        """Task runs matching `TaskRunFilter` fields, oldest first by default."""
        return self._execute(_routes.read_task_runs(flow_run_id, **filters))

    def set_task_run_state(
        self, id: IdLike, state: State, force: bool = False
    ) -> Reply[OrchestrationResult]:
        """Propose a state for one task run and wait for the server's decision."""
        return self._execute(_routes.set_task_run_state(id, state, force))

    @overload
    def report_task_run_states(
        self, reports: Sequence[StateReport], *, answer: Literal["full"] = "full"
    ) -> Reply[list[OrchestrationResult]]: ...

    @overload
    def report_task_run_states(
        self, reports: Sequence[StateReport], *, answer: Literal["minimal"]
    ) -> Reply[list[OrchestrationResult | None]]: ...

    def report_task_run_states(
        self, reports: Sequence[StateReport], *, answer: Literal["full", "minimal"] = "full"
    ) -> Reply[list[OrchestrationResult]] | Reply[list[OrchestrationResult | None]]:
        """Apply a batch of task-run transitions in order; one result per report. With
        `answer="minimal"`, a report accepted as proposed is answered None."""
        return self._execute(_routes.report_task_run_states(reports, answer))

    def read_task_run_states(self, id: IdLike) -> Reply[list[State]]:
        """The task run's states, oldest first."""
        return self._execute(_routes.read_task_run_states(id))

    # logs ---------------------------------------------------------------------
    def create_logs(self, logs: Sequence[LogCreate]) -> Reply[dict[str, int]]:
        """Store log records; answers `{"count": n}`."""
        return self._execute(_routes.create_logs(logs))

    def read_logs(
        self,
        flow_run_id: IdLike | None = None,
        task_run_id: IdLike | None = None,
        level_ge: int | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> Reply[list[Log]]:
        """Log records of a flow run and/or task run, oldest first."""
        return self._execute(
            _routes.read_logs(flow_run_id, task_run_id, level_ge, limit=limit, offset=offset)
        )

    # tag concurrency limits -------------------------------------------------------
    def create_concurrency_limit(self, tag: str, concurrency_limit: int) -> Reply[ConcurrencyLimit]:
        """Allow at most `concurrency_limit` task runs tagged `tag` to run at once
        (creates the limit or changes it; 0 makes such runs abort)."""
        return self._execute(_limit_routes.create_concurrency_limit(tag, concurrency_limit))

    def read_concurrency_limit(self, tag: str) -> Reply[ConcurrencyLimit]:
        """The limit on `tag` with the task runs holding its slots; `ObjectNotFound` if none."""
        return self._execute(_limit_routes.read_concurrency_limit(tag))

    def read_concurrency_limits(self) -> Reply[list[ConcurrencyLimit]]:
        """Every tag concurrency limit, by tag."""
        return self._execute(_limit_routes.read_concurrency_limits())

    def delete_concurrency_limit(self, tag: str) -> Reply[None]:
        """Remove the limit on `tag` (and its slots); `ObjectNotFound` if none."""
        return self._execute(_limit_routes.delete_concurrency_limit(tag))

    def reset_concurrency_limit(self, tag: str) -> Reply[ConcurrencyLimit]:
        """Free every slot of `tag` (held by runs whose process died unreported)."""
        return self._execute(_limit_routes.reset_concurrency_limit(tag))

    # autonomous task runs -----------------------------------------------------------
    def submit_task_runs(self, items: Sequence[TaskRunSubmit]) -> Reply[list[TaskRun]]:
        """Create autonomous task runs, Scheduled, queued for task servers."""
        return self._execute(_limit_routes.submit_task_runs(items))

    def claim_task_runs(
        self, task_keys: Sequence[str], worker: str, limit: int = 1, lease_seconds: float = 30.0
    ) -> Reply[list[ClaimedTaskRun]]:
        """Take up to `limit` queued runs of these task keys; each goes to one caller only."""
        return self._execute(_limit_routes.claim_task_runs(task_keys, worker, limit, lease_seconds))

    def renew_task_run_leases(
        self, ids: Sequence[IdLike], worker: str, lease_seconds: float = 30.0
    ) -> Reply[list[uuid.UUID]]:
        """Extend this worker's leases; answers the ids it still holds."""
        return self._execute(_limit_routes.renew_task_run_leases(ids, worker, lease_seconds))

    def release_task_run_leases(self, ids: Sequence[IdLike], worker: str) -> Reply[list[uuid.UUID]]:
        """End this worker's leases now (unfinished runs are queued again)."""
        return self._execute(_limit_routes.release_task_run_leases(ids, worker))
