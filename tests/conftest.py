"""Session-wide isolation: no test reads or writes the developer's ~/.prefray,
or reports to an API configured in the developer's environment."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from prefray.client.embedded import EmbeddedAPI, start_api
from prefray.settings import Settings, set_process_settings
from prefray.testing import prefray_test_harness

# Database and in-process API fixtures shared by tests/server and tests/concurrency.
pytest_plugins = ["db_fixtures"]

_CLEARED = ("PREFRAY_API_URL", "PREFRAY_API_KEY", "PREFRAY_API_DATABASE_URL")


@pytest.fixture(autouse=True, scope="session")
def _isolated_prefray_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in ("PREFRAY_HOME", *_CLEARED)}
    os.environ["PREFRAY_HOME"] = str(tmp_path_factory.mktemp("prefray-home"))
    for key in _CLEARED:
        os.environ.pop(key, None)
    set_process_settings(None)  # re-read the environment set above
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    set_process_settings(None)


@pytest.fixture(scope="module")
def api() -> Iterator[Settings]:
    """The embedded API over real HTTP on a throw-away SQLite database, for one
    test module (module scope: no module sees another's API URL in its env)."""
    with prefray_test_harness() as settings:
        yield settings


@pytest.fixture(scope="module")
def embedded_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedAPI]:
    """A real API server (uvicorn in a thread on a loopback port, SQLite in a temp
    dir) for one test module, leaving the process settings alone: tests point
    their own `Settings` at `embedded_api.url`."""
    server = start_api(Settings(home=tmp_path_factory.mktemp("embedded-api")), mode="thread")
    yield server
    server.stop()
