"""A hard deadline for a task run's function on a Ray worker.

The engine's timeout (`timeout_seconds`) stops waiting for the function and
interrupts it at its next Python bytecode. Code that holds the GIL in C (a
catastrophic regular expression, a C extension's loop) cannot be interrupted
that way: the worker could not even return its TimedOut state. So on the
worker, each call of a timed task's function also arms a kernel timer
(`setitimer`) for the timeout plus a grace period, with SIGALRM's default
action, which ends the process whatever holds the GIL. Ray then reports the
worker dead, and the driver's monitor records the run TimedOut
(`is_hard_timeout`). The timer is disarmed when the function returns or the
worker's engine finishes the run, so a thread abandoned after a soft timeout
never kills a later task.

Sync functions only, and only where Ray runs the task on the worker's main
thread (where SIGALRM's disposition can be set); elsewhere the soft timeout
alone applies.
"""

from __future__ import annotations

import copy
import functools
import inspect
import signal
import threading
from typing import Any

__all__ = ["disarm", "grace_seconds", "is_hard_timeout", "with_hard_deadline"]

_lock = threading.Lock()
_generation = 0  # which arming the timer belongs to
_timer_set = False  # whether the timer may be running (read without the lock by `disarm`)


def grace_seconds(timeout: float) -> float:
    """How long past its timeout a call may run before its worker is ended."""
    return min(max(1.0, 0.5 * timeout), 30.0)


def with_hard_deadline(task: Any) -> Any:
    """`task`, or a copy whose function arms the kernel timer (timed sync tasks
    on the main thread only)."""
    timeout = getattr(task, "timeout_seconds", None)
    if not timeout or not hasattr(signal, "setitimer"):
        return task
    if inspect.iscoroutinefunction(task.fn):
        return task
    if threading.current_thread() is not threading.main_thread():
        return task
    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # the default action ends the process
    armed = copy.copy(task)
    armed.fn = _armed(task.fn, float(timeout) + grace_seconds(float(timeout)))
    return armed


def _armed(fn: Any, seconds: float) -> Any:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        token = _arm(seconds)
        try:
            return fn(*args, **kwargs)
        finally:
            _disarm(token)

    return call


def _arm(seconds: float) -> int:
    global _generation, _timer_set
    with _lock:
        _generation += 1
        _timer_set = True
        signal.setitimer(signal.ITIMER_REAL, seconds)
        return _generation


def _disarm(token: int | None) -> None:
    global _generation, _timer_set
    with _lock:
        if token is None or token == _generation:
            _generation += 1
            _timer_set = False
            signal.setitimer(signal.ITIMER_REAL, 0)


def disarm() -> None:
    """Disarm whatever is armed (the worker's engine is done with the run); no
    system call when nothing is (a task without a timeout, every run of a map)."""
    if _timer_set:
        _disarm(None)


def is_hard_timeout(timeout: float | None, elapsed: float) -> bool:
    """On the driver: a worker that died after running at least this long on a
    timed task was ended by its deadline, not by a crash."""
    return bool(timeout) and elapsed >= float(timeout)  # type: ignore[arg-type]
