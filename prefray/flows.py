"""`@flow` and `Flow`: a function whose calls are recorded as flow runs.

    @flow(task_runner=ConcurrentTaskRunner())
    def pipeline(n: int = 10) -> int:
        return sum(score.map(range(n)) ...)

Calling a flow runs it now, on this thread, and returns its value (the
state with `return_state=True`); a failed run raises its exception. An async
flow returns a coroutine. A flow called inside a flow is a subflow.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from prefray.schemas import EmpiricalPolicy
from prefray.settings import Settings
from prefray.states import State
from prefray.utilities.callables import check_reserved_names, get_call_parameters
from prefray.utilities.options import (
    check_hooks,
    check_retries,
    check_timeout,
    render_run_name,
    retry_delays,
    with_changes,
)

__all__ = ["Flow", "flow"]

R = TypeVar("R")


class Flow(Generic[R]):
    """A function wrapped with orchestration options (see `flow`)."""

    def __init__(
        self,
        fn: Callable[..., R],
        name: str | None = None,
        version: str | None = None,
        flow_run_name: str | Callable[[], str] | None = None,
        retries: int | None = None,
        retry_delay_seconds: Any = None,
        retry_jitter_factor: float | None = None,
        task_runner: Any = None,
        description: str | None = None,
        timeout_seconds: float | None = None,
        validate_parameters: bool = True,
        persist_result: bool | None = None,
        result_storage: Any = None,
        result_serializer: str | None = None,
        cache_result_in_memory: bool = True,
        log_prints: bool | None = None,
        tags: list[str] | set[str] | None = None,
        on_completion: list[Callable[..., Any]] | None = None,
        on_failure: list[Callable[..., Any]] | None = None,
        on_cancellation: list[Callable[..., Any]] | None = None,
        on_crashed: list[Callable[..., Any]] | None = None,
        on_running: list[Callable[..., Any]] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"@flow expects a function, got {fn!r}.")
        self.fn = fn
        self.name = name or fn.__name__.replace("_", "-")
        owner = f"flow {self.name!r}"
        check_reserved_names(fn, "Flow")
        self.version = version
        self.flow_run_name = flow_run_name
        self.retries = check_retries(owner, retries, retry_jitter_factor)
        self.retry_delay_seconds = retry_delays(owner, retry_delay_seconds, self.retries)
        self.retry_jitter_factor = retry_jitter_factor
        self.task_runner = _check_runner(owner, task_runner)
        self.description = description or inspect.getdoc(fn)
        self.timeout_seconds = check_timeout(owner, timeout_seconds)
        self.validate_parameters = validate_parameters
        self.persist_result = persist_result
        self.result_storage = result_storage
        self.result_serializer = result_serializer
        self.cache_result_in_memory = cache_result_in_memory
        self.log_prints = log_prints
        self.tags = set(tags or ())
        self.on_completion = check_hooks(owner, "on_completion", on_completion)
        self.on_failure = check_hooks(owner, "on_failure", on_failure)
        self.on_cancellation = check_hooks(owner, "on_cancellation", on_cancellation)
        self.on_crashed = check_hooks(owner, "on_crashed", on_crashed)
        self.on_running = check_hooks(owner, "on_running", on_running)
        self.isasync = inspect.iscoroutinefunction(fn)
        self.empirical_policy = EmpiricalPolicy(
            retries=self.retries,
            retry_delay=self.retry_delay_seconds,
            retry_jitter_factor=retry_jitter_factor,
        )
        self._options = dict(
            name=name, version=version, flow_run_name=flow_run_name, retries=retries,
            retry_delay_seconds=retry_delay_seconds, retry_jitter_factor=retry_jitter_factor,
            task_runner=task_runner, description=description, timeout_seconds=timeout_seconds,
            validate_parameters=validate_parameters, persist_result=persist_result,
            result_storage=result_storage, result_serializer=result_serializer,
            cache_result_in_memory=cache_result_in_memory, log_prints=log_prints, tags=tags,
            on_completion=on_completion, on_failure=on_failure,
            on_cancellation=on_cancellation, on_crashed=on_crashed, on_running=on_running,
        )  # fmt: skip

    def to_deployment(self, name: str, **options: Any) -> Any:
        """A deployment of this flow (`parameters=`, `tags=`, `description=`,
        `entrypoint=`); `.apply()` registers it. See `prefray.deployments`."""
        from prefray.deployments import deployment_for_flow

        return deployment_for_flow(self, name, **options)

    def with_options(self, **options: Any) -> Flow[R]:
        """A copy of this flow with some options changed."""
        return Flow(self.fn, **with_changes(self._options, options))

    def __call__(self, *args: Any, return_state: bool = False, **kwargs: Any) -> Any:
        from prefray.engine.flow_run import FlowRunEngine

        parameters = get_call_parameters(self.fn, args, kwargs)
        engine = FlowRunEngine(self, parameters)
        if self.isasync:
            return _finish_async(engine, return_state)
        return _hand_back(engine.run_sync(), return_state)

    # used by the engine ----------------------------------------------------------
    def run_name(self, parameters: dict[str, Any]) -> str | None:
        template = self.flow_run_name
        if template is None:
            return None  # the server names it
        return render_run_name("flow_run_name", f"flow {self.name!r}", template, parameters)

    def should_persist(self, settings: Settings) -> bool:
        if self.persist_result is not None:
            return self.persist_result
        return settings.persist_results

    def persist(self, value: Any) -> Any:
        from prefray.results import persist_result

        return persist_result(value, storage=self.result_storage, serializer=self.result_serializer)

    def hooks_for(self, state: State) -> list[Callable[..., Any]]:
        if state.is_completed():
            return self.on_completion
        if state.is_failed():
            return self.on_failure
        if state.is_crashed():
            return self.on_crashed
        if state.is_cancelled():
            return self.on_cancellation
        return []

    def __repr__(self) -> str:
        return f"Flow(name={self.name!r})"


def _hand_back(state: State, return_state: bool) -> Any:
    return state if return_state else state.result()


async def _finish_async(engine: Any, return_state: bool) -> Any:
    return _hand_back(await engine.run_async(), return_state)


def _check_runner(owner: str, runner: Any) -> Any:
    from task_runners.base import BaseTaskRunner

    if runner is None:
        from task_runners.concurrent import ConcurrentTaskRunner

        return ConcurrentTaskRunner()
    if isinstance(runner, type) and issubclass(runner, BaseTaskRunner):
        return runner()
    if not isinstance(runner, BaseTaskRunner):
        raise TypeError(f"{owner}: task_runner must be a task runner, got {runner!r}.")
    return runner


def flow(__fn: Any = None, **options: Any) -> Any:
    """Make a function a flow. Options as in Prefect 2: name, version, description,
    flow_run_name, retries, retry_delay_seconds, retry_jitter_factor, task_runner
    (default ConcurrentTaskRunner), timeout_seconds, validate_parameters,
    persist_result, result_storage, result_serializer, cache_result_in_memory,
    log_prints, tags, on_completion/on_failure/on_cancellation/on_crashed/on_running.
    Bad options raise here, at decoration."""
    if __fn is not None:
        return Flow(__fn, **options)
    return lambda fn: Flow(fn, **options)
