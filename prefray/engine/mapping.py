"""Expanding `.map()` arguments into one parameter dict per task run."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from prefray.exceptions import MappingLengthMismatch, MappingMissingIterable
from prefray.futures import PrefrayFuture
from prefray.states import State
from prefray.utilities.annotations import quote, unmapped

__all__ = ["expand_map_parameters"]


def expand_map_parameters(fn: Callable[..., Any], parameters: dict[str, Any]) -> list[dict]:
    """Parameters are mapped when iterable (not str/bytes; a dict maps over its
    keys), static when wrapped in `unmapped(...)`/`quote(...)` or not iterable.
    A future or state passed as an iterable is waited for and its result iterated.
    Defaults count too, as in Prefect 2."""
    static: dict[str, Any] = {}
    iterables: dict[str, list[Any]] = {}
    variadic = _variadic_names(fn)
    for name, value in parameters.items():
        if isinstance(value, unmapped):
            static[name] = value.value
        elif isinstance(value, quote) or name in variadic:
            static[name] = value
        else:
            value = _resolve_upstream(value)
            if _is_iterable(value):
                iterables[name] = list(value)
            else:
                static[name] = value
    if not iterables:
        raise MappingMissingIterable(
            "No iterable parameters were received. Parameters for map must include at "
            f"least one iterable; got {sorted(parameters)} with none iterable. Wrap "
            "values you want passed whole in unmapped(...)."
        )
    lengths = {name: len(values) for name, values in iterables.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name!r}: {n}" for name, n in lengths.items())
        raise MappingLengthMismatch(
            "Received iterable parameters with different lengths. Parameters for map "
            f"must all be the same length. Got lengths: {{{shown}}}."
        )
    n = next(iter(lengths.values()))
    return [
        {name: (iterables[name][i] if name in iterables else static[name]) for name in parameters}
        for i in range(n)
    ]


def _resolve_upstream(value: Any) -> Any:
    if isinstance(value, PrefrayFuture):
        return value.result()
    if isinstance(value, State):
        return value.result()
    return value


def _is_iterable(value: Any) -> bool:
    return isinstance(value, Iterable) and not isinstance(value, (str, bytes))


def _variadic_names(fn: Callable[..., Any]) -> set[str]:
    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return {n for n, p in inspect.signature(fn).parameters.items() if p.kind in kinds}
