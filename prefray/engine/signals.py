"""Turning SIGTERM into an exception while a flow runs on the main thread, so
that the run is reported Crashed before the process goes."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["TerminationSignal", "sigterm_raises"]


class TerminationSignal(BaseException):
    """The process received SIGTERM while a flow run was in progress."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(f"The process received signal {signum} (SIGTERM).")
        self.signum = signum


def _raise(signum: int, frame: Any) -> None:
    raise TerminationSignal(signum)


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises TerminationSignal (main thread only;
    elsewhere signals cannot be handled and this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
