"""The prefray API client: the only code that speaks HTTP to the orchestration API.

>>> from prefray.client import get_client
>>> async with get_client() as client:                 # async
...     run = await client.read_flow_run(run_id)
>>> with get_client(sync_client=True) as client:       # sync
...     runs = client.read_flow_runs(state_types=["FAILED"])

Errors: HTTP 404 -> `ObjectNotFound`, 409 -> `ObjectAlreadyExists`, 401/403 ->
`Unauthorized`, other 4xx -> `InvalidRequest`, an API still unreachable after
`api_max_retries` retries -> `APIUnavailable` (all from `prefray.exceptions`).

The clients (httpx, the routes' pydantic adapters: ~50-90 ms of CPU to import)
load on first use, not with `import prefray`: a Ray worker imports prefray to
run its first task run and most never send a request of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, overload

if TYPE_CHECKING:
    from prefray.client.clients import PrefrayClient, SyncPrefrayClient

__all__ = ["PrefrayClient", "SyncPrefrayClient", "get_client"]

_LAZY = frozenset({"PrefrayClient", "SyncPrefrayClient"})


@overload
def get_client(sync_client: Literal[False] = False) -> PrefrayClient: ...


@overload
def get_client(sync_client: Literal[True]) -> SyncPrefrayClient: ...


def get_client(sync_client: bool = False) -> PrefrayClient | SyncPrefrayClient:
    """A client for the API in the current settings (starting the embedded one if
    no `PREFRAY_API_URL` is set): `PrefrayClient`, or `SyncPrefrayClient` with
    `sync_client=True`. Clients share the process's connection pool.
    """
    from prefray.client import clients

    return clients.SyncPrefrayClient() if sync_client else clients.PrefrayClient()


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from prefray.client import clients

        return getattr(clients, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
