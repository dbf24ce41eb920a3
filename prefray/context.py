"""Run contexts: what is running here and now.

A `FlowRunContext` is entered by the flow engine on the driver for the body of
a flow run; a `TaskRunContext` by the task-run engine wherever the task runs
(a thread, or a Ray worker). Both live in context variables, so threads and
asyncio tasks each see their own.
"""

from __future__ import annotations

import contextvars
import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from prefray.schemas import FlowRun, TaskRun
from prefray.settings import Settings, get_current_settings

if TYPE_CHECKING:
    from prefray.flows import Flow
    from prefray.tasks import Task

__all__ = [
    "FlowRunContext",
    "RunContext",
    "TagsContext",
    "TaskRunContext",
    "get_run_context",
    "tags",
]

C = TypeVar("C", bound="_ContextModel")


@dataclasses.dataclass
class _ContextModel:
    _var: ClassVar[contextvars.ContextVar[Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._var = contextvars.ContextVar(cls.__name__, default=None)

    @classmethod
    def get(cls: type[C]) -> C | None:
        return cls._var.get()

    def __enter__(self: C) -> C:
        self._token = self._var.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._var.reset(self._token)


@dataclasses.dataclass
class RunContext(_ContextModel):
    settings: Settings = dataclasses.field(default_factory=get_current_settings)


@dataclasses.dataclass
class FlowRunContext(RunContext):
    """The flow run executing on this thread/task (on the driver)."""

    flow: Flow | None = None
    flow_run: FlowRun | None = None
    task_runner: Any = None
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    log_prints: bool = False
    # engine bookkeeping (futures, dynamic keys, the flow's own states)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class TaskRunContext(RunContext):
    """The task run executing on this thread/task (anywhere)."""

    task: Task | None = None
    task_run: TaskRun | None = None
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    log_prints: bool = False
    flow_run_id: Any = None
    flow_name: str | None = None


def get_run_context() -> FlowRunContext | TaskRunContext:
    """The innermost run context; raises outside any flow or task run."""
    task_ctx = TaskRunContext.get()
    if task_ctx is not None:
        return task_ctx
    flow_ctx = FlowRunContext.get()
    if flow_ctx is not None:
        return flow_ctx
    raise RuntimeError("No run context: get_run_context() was called outside a flow or task run.")


@dataclasses.dataclass
class TagsContext(_ContextModel):
    current_tags: frozenset[str] = frozenset()


def tags(*new_tags: str) -> TagsContext:
    """Add tags to every flow and task run created inside the block.

    >>> with tags("db", "nightly"):
    ...     my_task()
    """
    parent = TagsContext.get()
    current = parent.current_tags if parent else frozenset()
    return TagsContext(current_tags=current | frozenset(new_tags))
