"""Per-task Ray options: runner defaults, per function, per call site.

Three ways, merged in this order (later wins, key by key):

1. the runner's defaults: `RayTaskRunner(remote_options={"num_cpus": 1})`;
2. the task's function: `@remote_options(num_gpus=1)` stacked with `@task`
   (above or below it; the options belong to the function, so they survive
   `task.with_options(...)`);
3. the call site: `with remote_options(memory=2**30): big.submit()` (as in
   prefect-ray; nested blocks merge, the innermost wins).

The options reach `ray.remote(...).options(...)` unchanged; Ray validates them.
Two are prefray's own and refused here: `num_returns` (a task run returns its
state and its value) and `max_retries` / `retry_exceptions` (the engine owns
retries: use `@task(retries=...)`).
"""

from __future__ import annotations

import contextvars
import types
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

__all__ = [
    "RESERVED_OPTIONS",
    "check_options",
    "current_options",
    "function_options",
    "merged_options",
    "remote_options",
]

F = TypeVar("F")

FUNCTION_ATTRIBUTE = "__prefray_ray_options__"
RESERVED_OPTIONS = {
    "num_returns": "a task run returns two objects (its state and its value)",
    "max_retries": "the engine owns retries: use @task(retries=...)",
    "retry_exceptions": "the engine owns retries: use @task(retries=..., retry_condition_fn=...)",
}

_EMPTY: Mapping[str, Any] = types.MappingProxyType({})
_current: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "prefray_ray_remote_options", default=_EMPTY
)


def check_options(options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A copy of `options`, or ValueError naming a reserved option."""
    for key in options:
        if not isinstance(key, str):
            raise TypeError(f"{where}: option names must be strings, got {key!r}.")
        if key in RESERVED_OPTIONS:
            raise ValueError(f"{where}: {key!r} cannot be set ({RESERVED_OPTIONS[key]}).")
    return dict(options)


class remote_options:  # noqa: N801 - prefect-ray's public name
    """Ray options for task runs: a context manager, or a decorator for a task.

    >>> with remote_options(num_cpus=2, resources={"gpu_node": 1}):
    ...     heavy.submit(x)
    >>> @remote_options(num_gpus=1)
    ... @task
    ... def train(data): ...
    """

    def __init__(self, **options: Any) -> None:
        self.options = check_options(options, "remote_options()")
        self._tokens: list[contextvars.Token[Mapping[str, Any]]] = []

    def __enter__(self) -> dict[str, Any]:
        merged = {**_current.get(), **self.options}
        self._tokens.append(_current.set(merged))
        return merged

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._tokens.pop())

    def __call__(self, target: F) -> F:
        fn = getattr(target, "fn", target)  # a Task, or the plain function under @task
        if not callable(fn):
            raise TypeError(f"remote_options(...) decorates a task or a function, not {target!r}.")
        merged = {**function_options(fn), **self.options}
        setattr(fn, FUNCTION_ATTRIBUTE, merged)
        return target


def current_options() -> Mapping[str, Any]:
    """The options of the innermost `with remote_options(...)` block here."""
    return _current.get()


def function_options(fn: Callable[..., Any]) -> Mapping[str, Any]:
    # the same empty mapping every time: the submitter caches by identity
    return getattr(fn, FUNCTION_ATTRIBUTE, None) or _EMPTY


def merged_options(defaults: Mapping[str, Any], fn: Callable[..., Any]) -> dict[str, Any]:
    return {**defaults, **function_options(fn), **_current.get()}
