"""Resolving a task run's inputs: upstream futures and states become values.

An upstream that did not complete makes the downstream run NotReady, unless
it was passed through `allow_failure(...)` (then the downstream receives the
upstream's exception as the value). `quote(...)` values pass through
unexamined; `unmapped(...)` is unwrapped.
"""

from __future__ import annotations

import uuid
from typing import Any

from prefray.engine.call import TaskRunCall
from prefray.exceptions import UpstreamTaskError
from prefray.futures import PrefrayFuture
from prefray.states import State
from prefray.utilities.annotations import allow_failure, quote, unmapped
from prefray.utilities.callables import parameters_to_args_kwargs
from prefray.utilities.collections import visit_collection

__all__ = ["UpstreamNotReady", "resolve_inputs", "resolve_value", "upstream_ids"]


class UpstreamNotReady(Exception):
    def __init__(self, task_run_id: uuid.UUID | None, state: State) -> None:
        super().__init__(
            f"Upstream task run '{task_run_id}' did not reach a 'COMPLETED' state "
            f"(it is {state.name})."
        )
        self.task_run_id = task_run_id

    def as_error(self) -> UpstreamTaskError:
        return UpstreamTaskError(str(self))


def resolve_inputs(call: TaskRunCall) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Wait for `wait_for` and every future in the parameters; the call's args/kwargs."""
    if call.wait_for:
        for item in call.wait_for:
            resolve_value(item)
    parameters = call.parameters
    for value in parameters.values():
        if type(value) not in _PLAIN:  # else (a .map() item) nothing to resolve
            parameters = {
                name: value if type(value) in _PLAIN else resolve_value(value)
                for name, value in parameters.items()
            }
            break
    return parameters_to_args_kwargs(call.task.fn, parameters)


# values that can hold no future, state or annotation (exact types: a subclass
# takes the full walk): the common .map() item skips it
_PLAIN = frozenset({int, float, str, bytes, bool, type(None), complex, range})


def resolve_value(value: Any, allow_failed: bool = False) -> Any:
    def visit(item: Any) -> Any:
        if isinstance(item, PrefrayFuture):
            return _state_value(item.wait_state(), item.task_run_id, allow_failed)
        if isinstance(item, State):
            return _state_value(item, item.state_details.task_run_id, allow_failed)
        if isinstance(item, allow_failure):
            return resolve_value(item.value, allow_failed=True)
        if isinstance(item, (quote, unmapped)):
            return item.value
        return item

    return visit_collection(value, visit)


def _state_value(state: State | None, task_run_id: uuid.UUID | None, allow_failed: bool) -> Any:
    assert state is not None  # wait_state() without a timeout always returns one
    if state.is_completed():
        return state.result()
    if not allow_failed:
        raise UpstreamNotReady(task_run_id, state)
    return state.result(raise_on_failure=False)


def upstream_ids(parameters: dict[str, Any]) -> dict[str, list[uuid.UUID]]:
    """The task runs each parameter depends on (recorded as the run's task_inputs)."""
    found: dict[str, list[uuid.UUID]] = {}
    for name, value in parameters.items():
        if type(value) in _PLAIN:
            continue
        ids: list[uuid.UUID] = []

        def visit(item: Any, ids: list[uuid.UUID] = ids) -> Any:
            if isinstance(item, PrefrayFuture):
                ids.append(item.task_run_id)
            elif isinstance(item, State) and item.state_details.task_run_id:
                ids.append(item.state_details.task_run_id)
            return item

        visit_collection(value, visit, return_data=False)
        if ids:
            found[name] = ids
    return found
