"""Embedded mode with real processes: the URL is published to the process and its
children, the server goes away with its driver, and two drivers can share one
SQLite file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from prefray.client import SyncPrefrayClient, get_client
from prefray.client.embedded import start_api
from prefray.exceptions import ConfigurationError
from prefray.settings import Settings, get_current_settings
from prefray.testing import prefray_test_harness

READ_IN_CHILD = (
    "import sys; from prefray.client import get_client; "
    "print(get_client(sync_client=True).read_flow_run(sys.argv[1]).name)"
)

DRIVER = textwrap.dedent(
    """
    import json, os, subprocess, sys
    from prefray.client import get_client
    from prefray.settings import get_current_settings
    client = get_client(sync_client=True)
    run = client.create_flow_run("driver", name="from-driver")
    child = subprocess.run([sys.executable, "-c", sys.argv[1], str(run.id)],
                           capture_output=True, text=True, check=True)
    print(json.dumps({"env": os.environ["PREFRAY_API_URL"], "url": client.api_url,
                      "settings": get_current_settings().api_url,
                      "child": child.stdout.strip(), "id": str(run.id)}))
    """
)

BUSY_DRIVER = textwrap.dedent(
    """
    import sys
    from prefray.client import get_client
    from prefray.schemas import StateReport, TaskRunCreate
    from prefray.states import Completed, Running
    client = get_client(sync_client=True)
    for i in range(int(sys.argv[1])):
        run = client.create_flow_run("twin", name=f"{sys.argv[2]}-{i}")
        tasks = client.create_task_runs([
            TaskRunCreate(name=f"t{j}", flow_run_id=run.id, task_key="t", dynamic_key=str(j))
            for j in range(50)
        ])
        for state in (Running, Completed):
            reports = [StateReport(task_run_id=t.id, state=state()) for t in tasks]
            client.report_task_run_states(reports)
        client.set_flow_run_state(run.id, Running())
        client.set_flow_run_state(run.id, Completed())
    print("ok")
    """
)


def _driver_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFRAY_")}
    return {**env, "PREFRAY_HOME": str(home)}


def _refuses(url: str) -> bool:
    try:
        httpx.get(f"{url}/api/health", timeout=1)
    except httpx.TransportError:
        return True
    return False


def test_harness_publishes_the_url_and_restores_everything() -> None:
    assert "PREFRAY_API_URL" not in os.environ
    with prefray_test_harness() as settings:
        url = settings.api_url
        assert url and os.environ["PREFRAY_API_URL"] == url
        assert get_current_settings().api_url == url
        run = get_client(sync_client=True).create_flow_run("harnessed", name="in-harness")
        child = subprocess.run(
            [sys.executable, "-c", READ_IN_CHILD, str(run.id)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert child.stdout.strip() == "in-harness"
        home = settings.home
    assert "PREFRAY_API_URL" not in os.environ
    assert get_current_settings().api_url is None
    assert not home.exists()
    assert _refuses(url)


def test_harnesses_do_not_share_a_database() -> None:
    with prefray_test_harness():
        get_client(sync_client=True).create_flow_run("first")
    with prefray_test_harness():
        assert get_client(sync_client=True).read_flow_runs() == []


@pytest.mark.slow
def test_a_driver_with_no_url_runs_and_publishes_an_embedded_api(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, READ_IN_CHILD],
        env=_driver_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["url"].startswith("http://127.0.0.1:")
    assert seen["env"] == seen["url"] == seen["settings"]
    assert seen["child"] == "from-driver"  # a child process reported to the same API
    assert _refuses(seen["url"])  # stopped when the driver exited
    server = start_api(Settings(home=tmp_path), mode="thread")  # the same SQLite file
    try:
        client = SyncPrefrayClient(settings=Settings(home=tmp_path, api_url=server.url))
        assert client.read_flow_run(seen["id"]).name == "from-driver"
    finally:
        server.stop()


@pytest.mark.slow
def test_two_drivers_started_at_once_share_one_sqlite_file(tmp_path: Path) -> None:
    drivers = [
        subprocess.Popen(
            [sys.executable, "-c", BUSY_DRIVER, "8", name],
            env=_driver_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for name in ("a", "b")
    ]
    for driver in drivers:
        stdout, stderr = driver.communicate(timeout=180)
        assert driver.returncode == 0 and stdout.strip() == "ok", stderr
    server = start_api(Settings(home=tmp_path), mode="thread")
    try:
        client = SyncPrefrayClient(settings=Settings(home=tmp_path, api_url=server.url))
        runs = client.read_flow_runs(flow_name="twin", limit=100)
        assert sorted(r.name for r in runs) == sorted(f"{d}-{i}" for d in "ab" for i in range(8))
        assert all(r.state_name == "Completed" for r in runs)
        tasks = client.read_task_runs(runs[0].id, limit=100)
        assert len(tasks) == 50 and all(t.state_name == "Completed" for t in tasks)
    finally:
        server.stop()


@pytest.mark.slow
def test_the_embedded_server_dies_with_a_killed_driver(tmp_path: Path) -> None:
    script = (
        "import time; from prefray.client import get_client; "
        "print(get_client(sync_client=True).api_url, flush=True); time.sleep(120)"
    )
    driver = subprocess.Popen(
        [sys.executable, "-c", script], env=_driver_env(tmp_path), stdout=subprocess.PIPE, text=True
    )
    try:
        assert driver.stdout is not None
        url = driver.stdout.readline().strip()
        assert not _refuses(url)
        os.kill(driver.pid, signal.SIGKILL)  # no atexit: only the stdin pipe tells the server
        driver.wait(timeout=10)
        deadline = time.monotonic() + 15
        while not _refuses(url) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _refuses(url)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        if driver.stdout is not None:
            driver.stdout.close()


@pytest.mark.parametrize("mode", ["thread", "subprocess"])
def test_an_api_that_cannot_start_says_why(tmp_path: Path, mode: str) -> None:
    settings = Settings(home=tmp_path, api_database_url="mysql://nobody@nowhere/db")
    with pytest.raises(ConfigurationError, match="unsupported database URL"):
        start_api(settings, mode=mode)  # type: ignore[arg-type]
