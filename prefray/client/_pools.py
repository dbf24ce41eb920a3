"""The process's connection pools: one per API URL (and, for async, per loop).

Clients are cheap wrappers that borrow a pool from here, so `with
get_client(sync_client=True) as c:` in a loop, or one client per task run on
a Ray worker, reuses the same keep-alive connections. Closing a client never
closes a pool.

- Sync pools (`httpx.Client`, thread-safe) live for the process and are closed
  at exit.
- Async pools (`httpx.AsyncClient`) are bound to the event loop they were made
  in, so they are kept per running loop. Each loop gets a tiny async
  generator whose `finally` closes that loop's pools: `asyncio.run` (and
  anyio's runner) finalizes async generators before closing the loop, which is
  the one moment the pools can still be closed cleanly on their own loop.
- A forked child forgets the parent's pools (their sockets belong to the
  parent) and opens its own.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ipaddress
import os
import threading
import weakref
from collections.abc import AsyncGenerator
from urllib.parse import urlsplit

import httpx

__all__ = ["async_pool", "close_sync_pools", "sync_pool"]

# Enough for a driver with many task-run threads; idle connections beyond the
# keep-alive count are closed rather than hoarded.
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=32)

_lock = threading.Lock()
_sync_pools: dict[str, httpx.Client] = {}


class _LoopPools:
    def __init__(self) -> None:
        self.pools: dict[str, httpx.AsyncClient] = {}
        self.closer: AsyncGenerator[None, None] | None = None

    async def aclose(self) -> None:
        pools, self.pools = list(self.pools.values()), {}
        for pool in pools:
            with contextlib.suppress(Exception):
                await pool.aclose()


_async_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPools] = (
    weakref.WeakKeyDictionary()
)


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _pool_options(url: str) -> dict[str, object]:
    # A proxy from the environment must never sit between a driver and its
    # own loopback API; a remote API honours the usual proxy variables.
    return {"base_url": url, "limits": _LIMITS, "trust_env": not _is_loopback(url)}


def sync_pool(url: str) -> httpx.Client:
    """The process's shared sync pool for `url`."""
    pool = _sync_pools.get(url)
    if pool is not None:
        return pool
    with _lock:
        pool = _sync_pools.get(url)
        if pool is None:
            pool = _sync_pools[url] = httpx.Client(**_pool_options(url))  # type: ignore[arg-type]
        return pool


async def async_pool(url: str) -> httpx.AsyncClient:
    """The running loop's shared async pool for `url`."""
    loop = asyncio.get_running_loop()
    record = _async_pools.get(loop)
    if record is None:
        record = _async_pools[loop] = _LoopPools()
        record.closer = _close_when_loop_shuts_down(loop, record)
        await record.closer.asend(None)
    pool = record.pools.get(url)
    if pool is None:
        pool = record.pools[url] = httpx.AsyncClient(**_pool_options(url))  # type: ignore[arg-type]
    return pool


async def _close_when_loop_shuts_down(
    loop: asyncio.AbstractEventLoop, record: _LoopPools
) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        _async_pools.pop(loop, None)
        await record.aclose()


def close_sync_pools() -> None:
    """Close every sync pool (at exit; tests call it to start from nothing)."""
    with _lock:
        pools = list(_sync_pools.values())
        _sync_pools.clear()
    for pool in pools:
        with contextlib.suppress(Exception):
            pool.close()


def _forget_after_fork() -> None:
    global _lock
    _lock = threading.Lock()
    _sync_pools.clear()
    _async_pools.clear()


atexit.register(close_sync_pools)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
