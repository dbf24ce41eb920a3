"""A throw-away API (a thread of the test process, on a free port) that child
processes reach through PREFRAY_API_URL, and a worker started in its own process
group."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import start, stop

from prefray.client import get_client
from prefray.settings import Settings
from prefray.testing import prefray_test_harness


@pytest.fixture(scope="module")
def api() -> Iterator[Settings]:
    with prefray_test_harness() as settings:
        assert os.environ["PREFRAY_API_URL"]  # children report to the same API
        yield settings


@pytest.fixture()
def client(api: Settings) -> Any:
    with get_client(sync_client=True) as c:
        yield c


@pytest.fixture()
def worker(api: Settings, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    started: list[subprocess.Popen] = []

    def _start(*extra: str) -> subprocess.Popen:
        args = [sys.executable, "-m", "prefray.cli", "worker", "start", "--poll-interval", "0.2"]
        process = start([*args, *extra], cwd=tmp_path)
        started.append(process)
        return process

    yield _start
    for process in started:
        stop(process)
