"""The runners the contract suite runs against. Adding a runner is one line in
RUNNERS (a factory, so each test gets a fresh, unstarted runner)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import pytest
from ray_fixtures import make_ray_runner

from prefray.settings import Settings
from task_runners import ConcurrentTaskRunner, SequentialTaskRunner

RUNNERS: list[Any] = [
    pytest.param(SequentialTaskRunner, id="sequential"),
    pytest.param(lambda: ConcurrentTaskRunner(max_workers=4), id="concurrent"),
    pytest.param(make_ray_runner, id="ray", marks=pytest.mark.ray),
]


@pytest.fixture(params=RUNNERS)
def runner(request: pytest.FixtureRequest, api: Settings) -> Any:
    return request.param()


@pytest.fixture(params=["sync", "async"])
def as_task_fn(request: pytest.FixtureRequest) -> Callable[[Callable[..., Any]], Any]:
    """Turns a plain function into the task function under test: itself, or an
    async function with the same signature and behaviour."""
    if request.param == "sync":
        return lambda fn: fn

    def to_async(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        wrapper.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
        return wrapper

    return to_async
