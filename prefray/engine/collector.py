"""Fewer cyclic garbage collections while flow runs execute in this process.

Every task run allocates a few dozen container objects (states, models,
futures), and a 10k-task flow keeps tens of thousands alive until it ends.
With CPython's default thresholds (a young collection every 700 allocations),
that traffic triggers full collections, each of which walks the whole heap of
the process (every module loaded): on a 10k-task `.map()` they were about
40 % of the driver's CPU. While at least one flow run is running here, young
collections run every 10,000 allocations instead (as in the API server
processes); reference counting still frees everything that is not in a cycle,
and cycles are collected as before, only in larger steps. The thresholds are
restored when the last flow run leaves, unless someone changed them meanwhile.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["FLOW_RUN_THRESHOLD", "fewer_collections"]

FLOW_RUN_THRESHOLD = 10_000  # allocations between young collections during flow runs

_lock = threading.Lock()
_depth = 0
_saved: tuple[int, int, int] | None = None
_ours: tuple[int, int, int] | None = None


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Raise the young-generation threshold for the block (nested and concurrent
    blocks share one raise; a higher threshold set by the user is kept)."""
    global _depth, _saved, _ours
    with _lock:
        if _depth == 0:
            _saved = gc.get_threshold()
            first, *older = _saved
            _ours = (max(first, FLOW_RUN_THRESHOLD), *older)  # type: ignore[assignment]
            gc.set_threshold(*_ours)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                if gc.get_threshold() == _ours and _saved is not None:
                    gc.set_threshold(*_saved)
                _saved = _ours = None
