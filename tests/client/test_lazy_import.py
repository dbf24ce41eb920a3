"""The clients (httpx and the routes) load on first use, not with `import prefray`:
a Ray worker imports prefray to run its first task run, and most workers never
send a request of their own."""

from __future__ import annotations

import subprocess
import sys

import pytest

import prefray.client
from prefray.client.clients import normalize_api_url
from prefray.settings import Settings, use_settings

_HEAVY = ("httpx", "prefray.client.clients", "prefray.client._routes")


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_what_a_ray_worker_imports_to_run_a_task_leaves_the_clients_out() -> None:
    loaded = _run(
        "import sys, prefray, prefray.engine.task_run, task_runners.ray.worker; "
        f"print(sorted(m for m in {_HEAVY!r} if m in sys.modules))"
    )
    assert loaded == "[]"


def test_the_clients_load_when_first_named_or_used() -> None:
    out = _run(
        "import sys; from prefray.client import get_client; "
        "print('httpx' in sys.modules); "
        "from prefray.client import SyncPrefrayClient; "
        "print('httpx' in sys.modules, SyncPrefrayClient.__module__)"
    )
    assert out.splitlines() == ["False", "True prefray.client.clients"]


def test_the_package_names_are_the_clients_own() -> None:
    from prefray.client import clients

    assert prefray.client.PrefrayClient is clients.PrefrayClient
    assert prefray.client.SyncPrefrayClient is clients.SyncPrefrayClient


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        prefray.client.nothing_here  # noqa: B018


def test_get_client_still_gives_each_kind(settings: Settings) -> None:
    from prefray.client import clients

    with use_settings(settings):
        with prefray.client.get_client(sync_client=True) as client:
            assert type(client) is clients.SyncPrefrayClient
            assert client.api_url == normalize_api_url(settings.api_url or "")
            assert client.health() is not None
        assert type(prefray.client.get_client()) is clients.PrefrayClient
