"""Turning what a run produced (a value, an exception, other states) into its state.

Prefect 2's rules: a returned State is the run's state; returned futures count
as their states; a collection of only states/futures is Failed if any failed
or crashed, Cancelled if any was cancelled, Failed if any is not final, else
Completed; any other value is Completed with that value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefray.futures import PrefrayFuture
from prefray.states import Cancelled, Completed, Crashed, Failed, State
from prefray.utilities.collections import visit_collection

__all__ = [
    "aggregate_states",
    "crashed_state",
    "failed_state",
    "return_value_to_state",
]


def failed_state(exc: BaseException, what: str = "Task run") -> State:
    message = f"{what} encountered an exception {type(exc).__name__}: {exc}"
    return Failed(message=message).with_exception(exc)


def crashed_state(exc: BaseException, what: str = "Task run") -> State:
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        message = f"{what} was interrupted by {type(exc).__name__}."
    else:
        message = f"{what} crashed: {type(exc).__name__}: {exc}"
    return Crashed(message=message).with_exception(exc)


def return_value_to_state(value: Any) -> State:
    """The state for a run that returned `value` (futures in it already finished)."""
    value = _futures_to_states(value)
    if isinstance(value, State):
        return value
    if isinstance(value, (list, tuple, set)) and value and all(isinstance(v, State) for v in value):
        state = aggregate_states(list(value))
        return state.with_value(value) if state.is_completed() else state
    return Completed().with_value(value)


def aggregate_states(states: Sequence[State]) -> State:
    total = len(states)
    failed = [s for s in states if s.is_failed() or s.is_crashed()]
    if failed:
        first = failed[0]
        state = Failed(message=f"{len(failed)}/{total} states failed.")
        return state.with_exception(first.exception) if first.exception else state
    cancelled = [s for s in states if s.is_cancelled()]
    if cancelled:
        return Cancelled(message=f"{len(cancelled)}/{total} states cancelled.")
    unfinished = [s for s in states if not s.is_final()]
    if unfinished:
        state = Failed(message=f"{len(unfinished)}/{total} states are not final.")
        first = unfinished[0]
        return state.with_exception(first.exception) if first.exception else state
    return Completed(message="All states completed.")


def _futures_to_states(value: Any) -> Any:
    def visit(item: Any) -> Any:
        if isinstance(item, PrefrayFuture):
            return item.wait_state()
        return item

    return visit_collection(value, visit)
