"""Calling a function with a timeout that really stops the caller's wait.

A sync function cannot be interrupted safely from outside. `call_with_timeout`
runs it on a helper thread (with a copy of the caller's context) and stops
waiting after `timeout` seconds. It then asks the helper thread to stop by
raising the timeout exception inside it at its next Python bytecode
(`PyThreadState_SetAsyncExc`); code blocked in C (a long `time.sleep`, a socket
read) finishes that call first and the helper thread is abandoned as a daemon.
Only calls with a timeout pay for the helper thread.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from contextvars import copy_context
from typing import Any, TypeVar

__all__ = ["call_with_timeout"]

T = TypeVar("T")


def call_with_timeout(fn: Callable[[], T], timeout: float, error: BaseException) -> T:
    """Return `fn()`, or raise `error` if it takes more than `timeout` seconds."""
    outcome: dict[str, Any] = {}
    ctx = copy_context()

    def target() -> None:
        try:
            outcome["value"] = ctx.run(fn)
        except BaseException as exc:  # handed back to the waiting thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="prefray-timeout", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        _interrupt(thread, type(error))
        raise error
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _interrupt(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type)
        )
