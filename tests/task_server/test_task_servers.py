"""Task servers as real processes against a real API server over HTTP: every queued
run executed exactly once by two servers on one queue; a killed server's run
picked up by another; results and parameters through result storage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from prefray.client import SyncPrefrayClient
from prefray.server.serve import ServerThread
from prefray.settings import Settings, use_settings
from prefray.task_server import TaskServer

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import queued_tasks  # noqa: E402


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """A standalone API on a fresh SQLite file; this process and children point at it."""
    home = tmp_path / "home"
    settings = Settings(home=home)
    with ServerThread(settings) as server:
        monkeypatch.setenv("PREFRAY_HOME", str(home))
        monkeypatch.setenv("PREFRAY_API_URL", server.url)
        monkeypatch.setenv("PREFRAY_TEST_LEDGER", str(tmp_path / "ledger.txt"))
        with use_settings(settings.with_overrides(api_url=server.url)) as s:
            yield s


def _ledger() -> list[str]:
    path = Path(os.environ["PREFRAY_TEST_LEDGER"])
    return path.read_text().splitlines() if path.exists() else []


def _start_server(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "prefray"), "task-server", "serve", *args],
        env=env,
        cwd=HERE,
        start_new_session=True,  # its own process group, stopped by pgid
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> str:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return out.decode(errors="replace")


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _states(ids: list) -> list[str]:
    with SyncPrefrayClient() as client:
        runs = client.read_task_runs(ids=ids, limit=len(ids))
    return [run.state_type.value for run in runs]


def test_submit_and_map_outside_a_flow_queue_scheduled_runs(api: Settings) -> None:
    future = queued_tasks.record.submit(7)
    futures = queued_tasks.record.map([1, 2])
    with SyncPrefrayClient() as client:
        runs = [client.read_task_run(f.task_run_id) for f in [future, *futures]]
    assert all(r.flow_run_id is None and r.state_type.value == "SCHEDULED" for r in runs)
    assert _ledger() == []  # nothing runs without a task server
    assert future.wait(timeout=0.2) is None
    with pytest.raises(TimeoutError):
        future.result(timeout=0.1)


def test_in_process_server_runs_them_and_results_come_back(api: Settings) -> None:
    futures = queued_tasks.record.map(range(5))
    server = TaskServer(queued_tasks.record, poll_interval=0.05)
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        assert [f.result(timeout=30) for f in futures] == [0, 10, 20, 30, 40]
    finally:
        server.stop()
        thread.join(timeout=30)
    assert sorted(int(line.split()[0]) for line in _ledger()) == [0, 1, 2, 3, 4]


@pytest.mark.ray
@pytest.mark.slow
def test_in_process_server_runs_them_on_ray(api: Settings) -> None:
    sys.path.insert(0, str(HERE.parent / "task_runners"))
    from ray_fixtures import ensure_local_ray

    from task_runners import RayTaskRunner

    ensure_local_ray()
    # the workers need the served module and the ledger's path
    env_vars = {"PYTHONPATH": str(HERE), "PREFRAY_TEST_LEDGER": os.environ["PREFRAY_TEST_LEDGER"]}
    runtime_env = {"env_vars": env_vars}
    futures = queued_tasks.record.map(range(4))
    runner = RayTaskRunner(remote_options={"runtime_env": runtime_env})
    server = TaskServer(queued_tasks.record, task_runner=runner, poll_interval=0.05)
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        assert [f.result(timeout=120) for f in futures] == [0, 10, 20, 30]
    finally:
        server.stop()
        thread.join(timeout=60)
    pids = {int(line.split()[1]) for line in _ledger()}
    assert sorted(int(line.split()[0]) for line in _ledger()) == [0, 1, 2, 3]
    assert os.getpid() not in pids  # executed by Ray workers, not this process


def test_bad_serve_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one task"):
        TaskServer()
    with pytest.raises(ValueError, match="limit must be >= 1"):
        TaskServer(queued_tasks.record, limit=0)


@pytest.mark.slow
def test_two_task_servers_execute_every_run_exactly_once(api: Settings) -> None:
    futures = queued_tasks.record.map(range(60))
    servers = [
        _start_server("queued_tasks:record", "--limit", "4", "--poll-interval", "0.05")
        for _ in range(2)
    ]
    try:
        ids = [f.task_run_id for f in futures]
        _wait_for(lambda: set(_states(ids)) == {"COMPLETED"}, 90, "all runs to complete")
    finally:
        outputs = [_stop(proc) for proc in servers]
    lines = _ledger()
    numbers = sorted(int(line.split()[0]) for line in lines)
    assert numbers == list(range(60)), outputs  # each exactly once
    pids = {line.split()[1] for line in lines}
    assert len(pids) == 2, f"both servers should have run some: {pids}"
    assert [f.result(timeout=5) for f in futures] == [n * 10 for n in range(60)]


@pytest.mark.slow
def test_a_killed_server_leaves_its_run_to_another(api: Settings) -> None:
    future = queued_tasks.hang_first_time.submit(1)
    first = _start_server("queued_tasks:hang_first_time", "--lease-seconds", "1")
    try:
        _wait_for(lambda: len(_ledger()) == 1, 60, "the first server to start the run")
    finally:
        _stop(first, signal.SIGKILL)  # dies mid-run: no report, no lease renewal
    second = _start_server("queued_tasks:hang_first_time", "--lease-seconds", "1")
    try:
        assert future.result(timeout=60) == 1
    finally:
        _stop(second)
    starts = _ledger()
    assert len(starts) == 2 and starts[0].split()[2] != starts[1].split()[2]
    with SyncPrefrayClient() as client:
        names = [s.name for s in client.read_task_run_states(future.task_run_id)]
    # the dead server's Running may not have left its batch before the kill
    assert names[:2] == ["Scheduled", "Pending"] and "Requeued" in names
    assert names[-3:] == ["Pending", "Running", "Completed"]
