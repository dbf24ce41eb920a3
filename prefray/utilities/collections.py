"""Walking arbitrary Python values to find or replace futures and annotations."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from prefray.states import State
from prefray.utilities.annotations import BaseAnnotation, quote

__all__ = ["visit_collection"]

# Types that can never contain a future: skipping them keeps .map() cheap.
_ATOMS = (int, float, str, bytes, bool, type(None), complex, range)


def visit_collection(expr: Any, visit: Callable[[Any], Any], return_data: bool = True) -> Any:
    """Call `visit` on `expr` and, recursively, on every item inside it.

    Descends into lists, tuples, sets, frozensets, dicts, dataclass instances,
    pydantic models and annotations (`unmapped`, `allow_failure`), but never into
    `quote(...)`. With `return_data`, rebuilds the value from what `visit`
    returned for each item (same container types); otherwise returns None.
    """
    if isinstance(expr, _ATOMS):
        result = visit(expr)
        return result if return_data else None
    result = visit(expr)
    if return_data and result is not expr:
        return result
    if isinstance(expr, (quote, State)):  # a State holds no futures; keep its payload
        return expr if return_data else None
    rebuilt = _visit_children(expr, visit, return_data)
    return rebuilt if return_data else None


def _visit_children(expr: Any, visit: Callable[[Any], Any], return_data: bool) -> Any:
    def again(item: Any) -> Any:
        return visit_collection(item, visit, return_data)

    if isinstance(expr, BaseAnnotation):
        return type(expr)(again(expr.value))
    if isinstance(expr, (list, tuple, set, frozenset)):
        items = [again(item) for item in expr]
        if not return_data:
            return expr
        if isinstance(expr, tuple) and hasattr(expr, "_fields"):
            return type(expr)(*items)  # namedtuple
        return type(expr)(items)
    if isinstance(expr, dict):
        pairs = [(again(k), again(v)) for k, v in expr.items()]
        return type(expr)(pairs) if return_data else expr
    if dataclasses.is_dataclass(expr) and not isinstance(expr, type):
        values = {f.name: again(getattr(expr, f.name)) for f in dataclasses.fields(expr)}
        return _rebuild_dataclass(expr, values) if return_data else expr
    if isinstance(expr, BaseModel):
        values = {name: again(getattr(expr, name)) for name in type(expr).model_fields}
        if not return_data or all(values[n] is getattr(expr, n) for n in values):
            return expr  # unchanged: keep the instance (and its private attributes)
        return expr.model_copy(update=values)
    return expr


def _rebuild_dataclass(expr: Any, values: dict[str, Any]) -> Any:
    if all(values[name] is getattr(expr, name) for name in values):
        return expr
    init_values = {f.name: values[f.name] for f in dataclasses.fields(expr) if f.init}
    new = type(expr)(**init_values)
    for f in dataclasses.fields(expr):
        if not f.init:
            object.__setattr__(new, f.name, values[f.name])
    return new
