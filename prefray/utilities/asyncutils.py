"""Running coroutines from sync code without stepping on a running event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["run_coroutine_sync"]

T = TypeVar("T")


def run_coroutine_sync(make_coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine `make_coro()` to completion and return its result.

    Uses `asyncio.run` on this thread when no loop runs here; otherwise (a
    sequential task inside an async flow) runs it on a short-lived helper thread
    with a copy of the current context, because a running loop cannot be
    re-entered.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())
    ctx = contextvars.copy_context()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="prefray-async") as pool:
        return pool.submit(ctx.run, lambda: asyncio.run(make_coro())).result()
