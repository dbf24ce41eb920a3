"""Checking decorator options at decoration time (shared by @flow and @task)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "check_hooks",
    "check_retries",
    "check_timeout",
    "render_run_name",
    "retry_delays",
    "with_changes",
]

MAX_RETRY_DELAYS = 50


def check_retries(owner: str, retries: int | None, jitter: float | None) -> int:
    if retries is None:
        return 0
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ValueError(f"{owner}: retries must be a whole number >= 0, got {retries!r}.")
    if jitter is not None and (not isinstance(jitter, (int, float)) or jitter < 0):
        raise ValueError(f"{owner}: retry_jitter_factor must be >= 0, got {jitter!r}.")
    return retries


def retry_delays(owner: str, delay: Any, retries: int) -> float | list[float]:
    """A number or a list of seconds; a callable (exponential_backoff) gets `retries`."""
    if delay is None:
        return 0.0
    if callable(delay):
        delay = delay(retries)
    if isinstance(delay, (int, float)) and not isinstance(delay, bool):
        if delay < 0:
            raise ValueError(f"{owner}: retry_delay_seconds must be >= 0, got {delay!r}.")
        return float(delay)
    if isinstance(delay, Iterable) and not isinstance(delay, (str, bytes)):
        delays = [float(d) for d in delay]
        if len(delays) > MAX_RETRY_DELAYS:
            raise ValueError(
                f"{owner}: can not configure more than {MAX_RETRY_DELAYS} retry delays "
                f"(got {len(delays)})."
            )
        if any(d < 0 for d in delays):
            raise ValueError(f"{owner}: retry delays must be >= 0 seconds, got {delays}.")
        return delays
    raise TypeError(
        f"{owner}: retry_delay_seconds must be a number, a list of numbers or a callable "
        f"such as exponential_backoff(...), got {delay!r}."
    )


def check_timeout(owner: str, timeout: Any) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, dt.timedelta):
        timeout = timeout.total_seconds()
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise ValueError(f"{owner}: timeout_seconds must be a number > 0, got {timeout!r}.")
    return float(timeout)


def check_hooks(owner: str, name: str, hooks: Any) -> list[Callable[..., Any]]:
    if hooks is None:
        return []
    if callable(hooks):
        hooks = [hooks]
    if not isinstance(hooks, (list, tuple)):
        raise TypeError(f"{owner}: expected a list of callables for {name!r}, got {hooks!r}.")
    for hook in hooks:
        if not callable(hook):
            raise TypeError(
                f"{owner}: expected callables in {name!r}, got {type(hook).__name__} {hook!r}."
            )
    return list(hooks)


def with_changes(options: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`options` with `changes` applied (for `with_options()`); unknown names are refused."""
    unknown = set(changes) - set(options)
    if unknown:
        raise TypeError(f"with_options() got unknown options: {sorted(unknown)}.")
    return {**options, **changes}


def render_run_name(
    option: str, owner: str, template: str | Callable[[], str], parameters: Mapping[str, Any]
) -> str:
    """A run's name from its `flow_run_name`/`task_run_name` option: a callable's
    answer, or the template filled in with the call's parameters."""
    if callable(template):
        return str(template())
    try:
        return template.format(**parameters)
    except (KeyError, IndexError, AttributeError) as exc:
        raise ValueError(
            f"{option} {template!r} of {owner} refers to {exc}, which "
            f"is not a parameter of the call (parameters: {sorted(parameters)})."
        ) from None
