"""A real API server (uvicorn on a loopback port, SQLite in a temp dir) shared by
the client tests, and `call`: one test body run through both clients."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from prefray.client import PrefrayClient, SyncPrefrayClient
from prefray.client.embedded import EmbeddedAPI, start_api
from prefray.settings import Settings

from .helpers import Call


@pytest.fixture(scope="session")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedAPI]:
    server = start_api(Settings(home=tmp_path_factory.mktemp("client-api")), mode="thread")
    yield server
    server.stop()


@pytest.fixture
def settings(api: EmbeddedAPI, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(home=tmp_path_factory.getbasetemp(), api_url=api.url, api_max_retries=2)


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
