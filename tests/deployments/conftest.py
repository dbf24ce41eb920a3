"""A throw-away API (a thread of the test process, on a free port) that child
processes reach through PREFRAY_API_URL, and helpers to run prefray's CLI and
flow files in real subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

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


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "prefray.cli", *args],
        capture_output=True, text=True, cwd=cwd, timeout=timeout, env=dict(os.environ),
    )  # fmt: skip


def start(args: list[str], cwd: Path | None = None) -> subprocess.Popen:
    """A child in its own process group (stopped by `stop`, never by name)."""
    return subprocess.Popen(
        args, cwd=cwd, env=dict(os.environ), start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def stop(process: subprocess.Popen, timeout: float = 15) -> str:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.stdout.read() if process.stdout else ""


def wait_for(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


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
