"""Which task runs must ask the server for a tag concurrency slot.

A task run whose tags include one with a concurrency limit makes a blocking
Running proposal (the server answers WAIT while the limit is full, ABORT at
a limit of 0); every other run reports Running in the background batches.
The set of limited tags is fetched once per flow run on the driver (and
travels with each call as `TaskRunCall.limited_tags`); where a call arrives
without it (an autonomous run, a runner that does not carry it), a per-process
copy at most `MAX_AGE_SECONDS` old is used. Runs without tags never ask.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from prefray.settings import Settings

__all__ = ["MAX_AGE_SECONDS", "fetch_limited_tags", "limited_tags", "needs_slot"]

MAX_AGE_SECONDS = 5.0
_cache: dict[str, tuple[float, frozenset[str]]] = {}
_lock = threading.Lock()


def fetch_limited_tags(settings: Settings) -> frozenset[str]:
    """The tags that have a concurrency limit now (one request)."""
    from prefray.client import SyncPrefrayClient

    with SyncPrefrayClient(settings=settings) as client:
        tags = frozenset(limit.tag for limit in client.read_concurrency_limits())
    with _lock:
        _cache[settings.api_url or ""] = (time.monotonic(), tags)
    return tags


def limited_tags(settings: Settings, max_age: float = MAX_AGE_SECONDS) -> frozenset[str]:
    """The limited tags, from this process's copy if it is fresh enough."""
    with _lock:
        cached = _cache.get(settings.api_url or "")
    if cached is not None and time.monotonic() - cached[0] <= max_age:
        return cached[1]
    return fetch_limited_tags(settings)


def needs_slot(
    tags: Iterable[str], settings: Settings, known: frozenset[str] | None = None
) -> bool:
    """Whether a run with these tags must ask for a slot before it runs."""
    tags = set(tags)
    if not tags:
        return False
    return bool(tags & (known if known is not None else limited_tags(settings)))
