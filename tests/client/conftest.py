"""Client settings pointed at a real API server (`embedded_api`, tests/conftest.py),
and `call`: one test body run through both clients."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from prefray.client import PrefrayClient, SyncPrefrayClient
from prefray.client.embedded import EmbeddedAPI
from prefray.settings import Settings

from .helpers import Call


@pytest.fixture
def settings(embedded_api: EmbeddedAPI, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        home=tmp_path_factory.getbasetemp(), api_url=embedded_api.url, api_max_retries=2
    )


def sync_call(settings: Settings) -> Call:
    def call(method: str, *args: Any, **kwargs: Any) -> Any:
        with SyncPrefrayClient(settings=settings) as client:
            return getattr(client, method)(*args, **kwargs)

    return call


def async_call(settings: Settings) -> Call:
    def call(method: str, *args: Any, **kwargs: Any) -> Any:
        async def go() -> Any:
            async with PrefrayClient(settings=settings) as client:
                return await getattr(client, method)(*args, **kwargs)

        return asyncio.run(go())

    return call


@pytest.fixture(params=["sync", "async"])
def call(request: pytest.FixtureRequest, settings: Settings) -> Call:
    """`call("read_flow_run", id)` through `SyncPrefrayClient` or `PrefrayClient`."""
    return sync_call(settings) if request.param == "sync" else async_call(settings)
