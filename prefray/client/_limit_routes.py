"""API calls for tag concurrency limits and the autonomous task-run queue (issue 5),
described as data like those in `_routes`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from urllib.parse import quote

from pydantic import TypeAdapter

from prefray.client._routes import Call, IdLike, run_id
from prefray.schemas import (
    ClaimedTaskRun,
    ConcurrencyLimit,
    ConcurrencyLimitCreate,
    LeaseRenewal,
    TaskRun,
    TaskRunClaim,
    TaskRunSubmit,
)

_LIMIT = TypeAdapter(ConcurrencyLimit)
_LIMITS = TypeAdapter(list[ConcurrencyLimit])
_SUBMITS = TypeAdapter(list[TaskRunSubmit])
_TASK_RUNS = TypeAdapter(list[TaskRun])
_CLAIMED = TypeAdapter(list[ClaimedTaskRun])
_IDS = TypeAdapter(list[uuid.UUID])


def _tag_path(prefix: str, tag: str) -> str:
    if not tag:
        raise ValueError("a concurrency limit needs a non-empty tag")
    return f"/api/concurrency_limits/{prefix}/{quote(tag, safe='')}"


def _nothing(content: bytes) -> None:
    return None


# concurrency limits -----------------------------------------------------------------
def create_concurrency_limit(tag: str, concurrency_limit: int) -> Call[ConcurrencyLimit]:
    body = ConcurrencyLimitCreate(tag=tag, concurrency_limit=concurrency_limit)
    return Call(
        "POST", "/api/concurrency_limits/", _LIMIT.validate_json, body.model_dump_json().encode()
    )


def read_concurrency_limit(tag: str) -> Call[ConcurrencyLimit]:
    return Call("GET", _tag_path("tag", tag), _LIMIT.validate_json)


def read_concurrency_limits() -> Call[list[ConcurrencyLimit]]:
    return Call("GET", "/api/concurrency_limits/", _LIMITS.validate_json)


def delete_concurrency_limit(tag: str) -> Call[None]:
    return Call("DELETE", _tag_path("tag", tag), _nothing)


def reset_concurrency_limit(tag: str) -> Call[ConcurrencyLimit]:
    return Call("POST", _tag_path("reset", tag), _LIMIT.validate_json)


# the task-run queue -----------------------------------------------------------------
def submit_task_runs(items: Sequence[TaskRunSubmit]) -> Call[list[TaskRun]]:
    body = _SUBMITS.dump_json(list(items), exclude_none=True)
    return Call("POST", "/api/task_queue/submit", _TASK_RUNS.validate_json, body)


def claim_task_runs(
    task_keys: Sequence[str], worker: str, limit: int = 1, lease_seconds: float = 30.0
) -> Call[list[ClaimedTaskRun]]:
    body = TaskRunClaim(
        task_keys=list(task_keys), worker=worker, limit=limit, lease_seconds=lease_seconds
    )
    return Call(
        "POST", "/api/task_queue/claim", _CLAIMED.validate_json, body.model_dump_json().encode()
    )


def _lease_call(
    action: str, ids: Sequence[IdLike], worker: str, lease_seconds: float
) -> Call[list[uuid.UUID]]:
    body = LeaseRenewal(
        task_run_ids=[run_id(i) for i in ids], worker=worker, lease_seconds=lease_seconds
    )
    return Call(
        "POST", f"/api/task_queue/{action}", _IDS.validate_json, body.model_dump_json().encode()
    )


def renew_task_run_leases(
    ids: Sequence[IdLike], worker: str, lease_seconds: float = 30.0
) -> Call[list[uuid.UUID]]:
    return _lease_call("renew", ids, worker, lease_seconds)


def release_task_run_leases(ids: Sequence[IdLike], worker: str) -> Call[list[uuid.UUID]]:
    return _lease_call("release", ids, worker, 1.0)
