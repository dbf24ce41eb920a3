"""What travels between the driver and a Ray worker for one task run.

A submission is `execute(shared_key, shared, spec, *upstream_values)`:

- `shared_key`, `shared`: the Task object and the settings snapshot, pickled
  once per (task, settings) on the driver and unpickled once per worker
  process (cached by `shared_key`), however many runs of a map use them. Small
  payloads travel inline as bytes; large ones (a task whose function holds
  big data) are put in the object store once and passed by reference. Both are
  top-level arguments: a reference nested inside an argument would cost Ray
  a borrower registration per call (about 0.3 ms here);
- `spec` (`CallSpec`): what is particular to this run: its `TaskRun`, its
  parameters with every upstream future replaced by an `Upstream` placeholder;
- `upstream_values`: one top-level ObjectRef per upstream future, so Ray runs
  the task after its upstreams and moves their values worker to worker.

An upstream's value object is its return value when it completed, or a
`NotCompleted` marker carrying its final state (then the downstream is
NotReady, or, through `allow_failure`, receives the exception).
"""

from __future__ import annotations

import dataclasses
import traceback
import uuid
from typing import Any

from prefray.schemas import TaskRun
from prefray.states import State

__all__ = [
    "CallSpec",
    "NotCompleted",
    "RemoteTraceback",
    "Upstream",
    "WorkerResult",
    "portable_exception",
    "restore_exception",
]


@dataclasses.dataclass(frozen=True)
class Upstream:
    """Stands where an upstream future was; `index` is its top-level argument."""

    index: int
    task_run_id: uuid.UUID


@dataclasses.dataclass
class CallSpec:
    task_run: TaskRun
    parameters: dict[str, Any]
    wait_for: list[Any] | None
    flow_run_id: uuid.UUID | None
    flow_name: str | None
    log_prints: bool
    dynamic_index: int | None
    upstream_ids: list[uuid.UUID]  # by argument index


@dataclasses.dataclass
class NotCompleted:
    """The value object of a run that did not complete: its final state."""

    state: State


@dataclasses.dataclass
class WorkerResult:
    """The small first return of a task run: fetched by the driver, never the value."""

    state: State  # without its value; with its exception (portable)
    reports: list[Any]  # TaskRunCreate / StateReport the driver ships in its batches
    pid: int
    node_id: str | None = None


class RemoteTraceback(Exception):
    """Set as `__cause__` of an exception raised on a Ray worker: its traceback there."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def portable_exception(exc: BaseException) -> BaseException:
    """`exc` with its worker traceback kept as text, or a stand-in if it cannot pickle."""
    import cloudpickle

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        cloudpickle.dumps(exc)
        portable: BaseException = exc
    except Exception:
        portable = RuntimeError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
    portable.__dict__["_prefray_remote_tb"] = f'\n"""\n{text}"""'
    return portable


def restore_exception(exc: BaseException | None) -> BaseException | None:
    """On the driver: hang the worker's traceback on the exception as its cause."""
    if exc is None:
        return None
    text = exc.__dict__.pop("_prefray_remote_tb", None) if hasattr(exc, "__dict__") else None
    if text and exc.__cause__ is None:
        exc.__cause__ = RemoteTraceback(text)
    return exc
