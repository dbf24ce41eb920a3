"""One connection pool per process per API URL (and per event loop for async)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import psutil
import pytest

from prefray.client import PrefrayClient, SyncPrefrayClient, _pools, get_client
from prefray.settings import Settings, use_settings


def _connections_to(url: str) -> int:
    port = urlsplit(url).port
    return sum(
        1
        for conn in psutil.Process().net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
    )


def test_sync_clients_share_one_pool_and_connection(settings: Settings) -> None:
    with use_settings(settings):
        for _ in range(20):
            with get_client(sync_client=True) as client:
                client.health()
    pool = _pools.sync_pool(settings.api_url or "")
    assert pool is _pools.sync_pool(settings.api_url or "")
    assert not pool.is_closed
    assert _connections_to(settings.api_url or "") == 1


def test_closing_a_client_keeps_the_pool_and_refuses_reuse(settings: Settings) -> None:
    client = SyncPrefrayClient(settings=settings)
    client.health()
    client.close()
    assert not _pools.sync_pool(client.api_url).is_closed
    with pytest.raises(RuntimeError, match="closed"):
        client.health()
    with pytest.raises(RuntimeError, match="closed"):
        client.__enter__()


def test_sync_client_is_thread_safe(settings: Settings) -> None:
    client = SyncPrefrayClient(settings=settings)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.health(), range(64)))
    assert answers == [{"status": "ok"}] * 64


def test_async_clients_share_the_loops_pool_closed_with_the_loop(settings: Settings) -> None:
    async def two_clients() -> list[object]:
        pools = []
        for _ in range(2):
            async with PrefrayClient(settings=settings) as client:
                await client.health()
                pools.append(await _pools.async_pool(client.api_url))
        return pools

    first, second = asyncio.run(two_clients())
    assert first is second
    assert first.is_closed  # asyncio.run finalized the loop's pools
    (again, _) = asyncio.run(two_clients())
    assert again is not first


def test_get_client_picks_the_kind(settings: Settings) -> None:
    with use_settings(settings):
        assert isinstance(get_client(), PrefrayClient)
        assert isinstance(get_client(sync_client=True), SyncPrefrayClient)
        assert get_client().api_url == settings.api_url


def test_api_url_with_api_suffix_is_accepted(settings: Settings) -> None:
    url = f"{settings.api_url}/api/"
    assert SyncPrefrayClient(url, settings=settings).health() == {"status": "ok"}
