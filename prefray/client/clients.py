"""`PrefrayClient` (async) and `SyncPrefrayClient`: the only code that speaks HTTP.

Both share their methods (`Operations`) and differ only in how one request
spec is sent: `_send` below, a retry loop of a few lines each.

>>> with get_client(sync_client=True) as client:
...     runs = client.read_flow_runs(limit=10)
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import time
from typing import Any

import httpx

from prefray.client import _pools
from prefray.client._operations import Operations
from prefray.client._policy import conclude, retry_delay
from prefray.client._routes import Batch, Call
from prefray.settings import Settings, get_current_settings

__all__ = ["PrefrayClient", "SyncPrefrayClient", "normalize_api_url"]


class _Lifecycle(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


def normalize_api_url(url: str) -> str:
    """The server root: `http://host:port`, tolerating a trailing `/` or `/api`."""
    url = url.strip().rstrip("/")
    if url.endswith("/api"):
        url = url[: -len("/api")]
    if not url.startswith(("http://", "https://")):
        raise ValueError(
            f"PREFRAY_API_URL {url!r} is not an http(s) URL; set it like "
            "'http://127.0.0.1:4200', or unset it to use the embedded server."
        )
    return url


def _resolve_url(settings: Settings) -> str:
    if settings.api_url:
        return normalize_api_url(settings.api_url)
    from prefray.client import embedded  # starts a server: imported only when needed

    return embedded.ensure_api(settings)


class _ClientBase(Operations):
    def __init__(self, api_url: str | None = None, *, settings: Settings | None = None) -> None:
        settings = settings or get_current_settings()
        if api_url is not None:
            settings = settings.with_overrides(api_url=api_url)
        self._settings = settings
        self.api_url = _resolve_url(settings)
        self._headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if settings.api_key is not None:
            self._headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self._timeout = httpx.Timeout(settings.api_request_timeout)
        self._state = _Lifecycle.OPEN

    def __repr__(self) -> str:
        return f"{type(self).__name__}(api_url={self.api_url!r}, {self._state.value})"

    def _check_open(self) -> None:
        if self._state is _Lifecycle.CLOSED:
            raise RuntimeError(
                f"This {type(self).__name__} was closed and cannot be reused; "
                "get a new one with prefray.client.get_client()."
            )

    def _request_args(self, call: Call[Any]) -> dict[str, Any]:
        return {
            "method": call.method,
            "url": call.path,
            "content": call.body,
            "headers": self._headers,
            "timeout": self._timeout,
        }

    def _finish(self, call: Call[Any], outcome: Any, attempts: int) -> Any:
        response = conclude(outcome, attempts, f"{call.method} {call.path}", self.api_url)
        return call.parse(response.content)


class SyncPrefrayClient(_ClientBase):
    """The blocking client; thread-safe, and cheap to make (the pool is shared)."""

    def __enter__(self) -> SyncPrefrayClient:
        self._check_open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop using this client; the process's pool stays open for others."""
        self._state = _Lifecycle.CLOSED

    def _execute(self, spec: Call[Any] | Batch[Any]) -> Any:
        self._check_open()
        if isinstance(spec, Batch):
            return spec.combine([self._send(call) for call in spec.calls])
        return self._send(spec)

    def _send(self, call: Call[Any]) -> Any:
        pool = _pools.sync_pool(self.api_url)
        args = self._request_args(call)
        for attempt in itertools.count():
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = pool.request(**args)
            except httpx.TransportError as exc:
                outcome = exc
            delay = retry_delay(outcome, attempt, self._settings.api_max_retries)
            if delay is None:
                return self._finish(call, outcome, attempt + 1)
            time.sleep(delay)


class PrefrayClient(_ClientBase):
    """The async client: `async with get_client() as client: await client.read_flow_run(id)`."""

    async def __aenter__(self) -> PrefrayClient:
        self._check_open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop using this client; the loop's pool stays open for others."""
        self._state = _Lifecycle.CLOSED

    async def _execute(self, spec: Call[Any] | Batch[Any]) -> Any:
        self._check_open()
        if isinstance(spec, Batch):
            return spec.combine([await self._send(call) for call in spec.calls])
        return await self._send(spec)

    async def _send(self, call: Call[Any]) -> Any:
        pool = await _pools.async_pool(self.api_url)
        args = self._request_args(call)
        for attempt in itertools.count():
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = await pool.request(**args)
            except httpx.TransportError as exc:
                outcome = exc
            delay = retry_delay(outcome, attempt, self._settings.api_max_retries)
            if delay is None:
                return self._finish(call, outcome, attempt + 1)
            await asyncio.sleep(delay)
