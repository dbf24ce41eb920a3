"""`@task` and `Task`: the unit of work a flow runs, records and retries.

    @task(retries=2, retry_delay_seconds=1)
    def score(x: int) -> int:
        return x * 2

Inside a flow: `score(1)` runs now and returns the value, `score.submit(1)`
returns a future, `score.map([1, 2, 3])` one future per item. Outside a flow,
`score(1)` runs an autonomous task run (recorded, with no flow run), as in
Prefect 2.20; `.submit()`/`.map()` queue Scheduled autonomous runs, their
parameters in result storage, for a task server (`prefray task-server serve
module:score`) to run; their futures wait by polling the API. A task called from inside
another task run runs its function directly, unrecorded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

from prefray.caching import exponential_backoff, task_input_hash  # re-exported as in Prefect
from prefray.schemas import EmpiricalPolicy
from prefray.utilities.callables import check_reserved_names
from prefray.utilities.options import (
    check_hooks,
    check_retries,
    check_timeout,
    render_run_name,
    retry_delays,
    with_changes,
)

__all__ = ["Task", "exponential_backoff", "task", "task_input_hash"]

R = TypeVar("R")
_UNSET: Any = object()


class Task(Generic[R]):
    """A function wrapped with orchestration options (see `task`)."""

    def __init__(
        self,
        fn: Callable[..., R],
        name: str | None = None,
        description: str | None = None,
        tags: list[str] | set[str] | None = None,
        version: str | None = None,
        cache_key_fn: Callable[..., str | None] | None = None,
        cache_expiration: dt.timedelta | None = None,
        task_run_name: str | Callable[[], str] | None = None,
        retries: int | None = None,
        retry_delay_seconds: Any = None,
        retry_jitter_factor: float | None = None,
        persist_result: bool | None = None,
        result_storage: Any = None,
        result_serializer: str | None = None,
        result_storage_key: str | None = None,
        cache_result_in_memory: bool = True,
        timeout_seconds: float | dt.timedelta | None = None,
        log_prints: bool | None = None,
        refresh_cache: bool | None = None,
        on_completion: list[Callable[..., Any]] | None = None,
        on_failure: list[Callable[..., Any]] | None = None,
        retry_condition_fn: Callable[..., bool] | None = None,
        viz_return_value: Any = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"@task expects a function, got {fn!r}.")
        self.fn = fn
        self.name = name or fn.__name__
        owner = f"task {self.name!r}"
        check_reserved_names(fn, "Task")
        self.description = description or inspect.getdoc(fn)
        self.tags = set(tags or ())
        self.version = version
        self.isasync = inspect.iscoroutinefunction(fn)
        self.task_key = _task_key(fn)
        self.cache_key_fn = _callable_or_none(owner, "cache_key_fn", cache_key_fn)
        self.cache_expiration = cache_expiration
        self.task_run_name = task_run_name
        self.retries = check_retries(owner, retries, retry_jitter_factor)
        self.retry_delay_seconds = retry_delays(owner, retry_delay_seconds, self.retries)
        self.retry_jitter_factor = retry_jitter_factor
        self.persist_result = persist_result
        self.result_storage = result_storage
        self.result_serializer = _check_serializer(owner, result_serializer)
        self.result_storage_key = result_storage_key
        self.cache_result_in_memory = cache_result_in_memory
        self.timeout_seconds = check_timeout(owner, timeout_seconds)
        self.log_prints = log_prints
        self.refresh_cache = refresh_cache
        self.on_completion = check_hooks(owner, "on_completion", on_completion)
        self.on_failure = check_hooks(owner, "on_failure", on_failure)
        self.retry_condition_fn = _callable_or_none(owner, "retry_condition_fn", retry_condition_fn)
        self.viz_return_value = viz_return_value
        self.empirical_policy = EmpiricalPolicy(
            retries=self.retries,
            retry_delay=self.retry_delay_seconds,
            retry_jitter_factor=retry_jitter_factor,
        )
        self._options = dict(
            name=name, description=description, tags=tags, version=version,
            cache_key_fn=cache_key_fn, cache_expiration=cache_expiration,
            task_run_name=task_run_name, retries=retries,
            retry_delay_seconds=retry_delay_seconds,
            retry_jitter_factor=retry_jitter_factor, persist_result=persist_result,
            result_storage=result_storage, result_serializer=result_serializer,
            result_storage_key=result_storage_key,
            cache_result_in_memory=cache_result_in_memory,
            timeout_seconds=timeout_seconds, log_prints=log_prints,
            refresh_cache=refresh_cache, on_completion=on_completion,
            on_failure=on_failure, retry_condition_fn=retry_condition_fn,
            viz_return_value=viz_return_value,
        )  # fmt: skip

    def with_options(self, **options: Any) -> Task[R]:
        """A copy of this task with some options changed: `t.with_options(retries=3)`."""
        return Task(self.fn, **with_changes(self._options, options))

    def run_name(self, parameters: dict[str, Any], dynamic_key: str) -> str:
        """This run's name: `task_run_name` (template or callable), else `name-key`."""
        template = self.task_run_name
        if template is None:
            return f"{self.name}-{dynamic_key}"
        return render_run_name("task_run_name", f"task {self.name!r}", template, parameters)

    # calling ----------------------------------------------------------------
    def __call__(self, *args: Any, return_state: bool = False, wait_for: Any = None, **kwargs):
        calls = _calls()
        if self._awaitable_here():
            return _in_thread(calls.call_task, self, args, kwargs, wait_for, return_state)
        return calls.call_task(self, args, kwargs, wait_for, return_state)

    def submit(self, *args: Any, return_state: bool = False, wait_for: Any = None, **kwargs):
        """Run on the flow's task runner; a future (a state with `return_state=True`)."""
        calls = _calls()
        future = calls.submit_task(self, args, kwargs, wait_for)
        return self._hand_back(future.wait_state() if return_state else future)

    def map(self, *args: Any, return_state: bool = False, wait_for: Any = None, **kwargs):
        """One run per item of the iterable arguments; a list of futures (or states)."""
        calls = _calls()
        futures = calls.map_task(self, args, kwargs, wait_for)
        if return_state:
            return self._hand_back([f.wait_state() for f in futures])
        return self._hand_back(futures)

    def _awaitable_here(self) -> bool:
        """Async task in an async flow: calls return awaitables, as in Prefect 2."""
        if not self.isasync:
            return False
        from prefray.context import FlowRunContext

        ctx = FlowRunContext.get()
        return ctx is not None and bool(ctx.extra.get("book") and ctx.extra["book"].is_async)

    def _hand_back(self, value: Any) -> Any:
        if not self._awaitable_here():
            return value
        for future in value if isinstance(value, list) else [value]:
            if hasattr(future, "asynchronous"):
                future.asynchronous = True
        return _ready(value)

    def __repr__(self) -> str:
        return f"Task(name={self.name!r})"


_calls_module: Any = None


def _calls() -> Any:
    """`prefray.engine.calls`, imported on first use (it imports the engine)."""
    global _calls_module
    if _calls_module is None:
        from prefray.engine import calls

        _calls_module = calls
    return _calls_module


async def _ready(value: Any) -> Any:
    return value


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    import asyncio

    return await asyncio.to_thread(fn, *args)


def _task_key(fn: Callable[..., Any]) -> str:
    qualname = getattr(fn, "__qualname__", repr(fn))
    digest = hashlib.md5(f"{fn.__module__}:{qualname}".encode(), usedforsecurity=False)
    return f"{qualname}-{digest.hexdigest()[:8]}"


def _callable_or_none(owner: str, name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"{owner}: {name} must be callable, got {value!r}.")
    return value


def _check_serializer(owner: str, serializer: Any) -> Any:
    if serializer is None or not isinstance(serializer, str):
        return serializer
    if serializer not in ("pickle", "json", "cloudpickle"):
        raise ValueError(
            f"{owner}: result_serializer must be 'pickle' or 'json', got {serializer!r}."
        )
    return serializer


@overload
def task(__fn: Callable[..., R]) -> Task[R]: ...
@overload
def task(__fn: None = None, **options: Any) -> Callable[[Callable[..., R]], Task[R]]: ...
def task(__fn: Any = None, **options: Any) -> Any:
    """Make a function a task. Options as in Prefect 2: name, description, tags,
    version, retries, retry_delay_seconds (number, list, `exponential_backoff`),
    retry_jitter_factor, retry_condition_fn, timeout_seconds, persist_result,
    result_storage, result_serializer, result_storage_key, cache_key_fn,
    cache_expiration, refresh_cache, cache_result_in_memory, task_run_name,
    log_prints, on_completion, on_failure. Bad options raise here, at decoration.
    """
    if __fn is not None:
        return Task(__fn, **options)
    return lambda fn: Task(fn, **options)
