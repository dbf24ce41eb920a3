"""End to end over a real port (uvicorn): round trips, load, two server processes on
one SQLite file."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefray.server.serve import ServerThread
from prefray.settings import Settings


@pytest.fixture
def served(settings: Settings) -> Iterator[str]:
    with ServerThread(settings) as server:
        yield server.url


def test_round_trip_over_a_real_port(served: str) -> None:
    with httpx.Client(base_url=served, trust_env=False) as http:
        assert http.get("/api/health").json() == {"status": "ok"}
        fr = http.post("/api/flow_runs/", json={"flow_name": "f"}).json()
        body = [{"name": "t", "flow_run_id": fr["id"], "task_key": "t", "dynamic_key": str(i)}
                for i in range(100)]  # fmt: skip
        runs = http.post("/api/task_runs/bulk", json=body).json()
        reports = [{"task_run_id": r["id"], "state": {"type": t}} for t in ("RUNNING", "COMPLETED")
                   for r in runs]  # fmt: skip
        results = http.post("/api/task_runs/states", json=reports).json()
        assert {r["status"] for r in results} == {"ACCEPT"}
        flt = {"flow_run_id": fr["id"], "state_types": ["COMPLETED"], "limit": 1000}
        assert len(http.post("/api/task_runs/filter", json=flt).json()) == 100


def test_server_thread_stops_and_frees_its_port(settings: Settings) -> None:
    server = ServerThread(settings).start()
    port = server.port
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/api/health", trust_env=False)


async def _load(urls: list[str], writers: int = 20, per_writer: int = 500) -> dict[str, Any]:
    """`writers` clients, each sending `per_writer` single-report requests."""
    runs_per_writer = per_writer // 2  # RUNNING then COMPLETED for each
    async with httpx.AsyncClient(base_url=urls[0], trust_env=False, timeout=120) as http:
        fr = (await http.post("/api/flow_runs/", json={"flow_name": "load"})).json()
        body = [{"name": "t", "flow_run_id": fr["id"], "task_key": "t", "dynamic_key": str(i)}
                for i in range(writers * runs_per_writer)]  # fmt: skip
        runs = (await http.post("/api/task_runs/bulk", json=body)).json()
    errors: list[str] = []

    async def writer(index: int) -> None:
        mine = runs[index * runs_per_writer : (index + 1) * runs_per_writer]
        limits = httpx.Limits(max_connections=1)
        url = urls[index % len(urls)]
        async with httpx.AsyncClient(
            base_url=url, trust_env=False, timeout=120, limits=limits
        ) as c:
            for state_type in ("RUNNING", "COMPLETED"):
                for run in mine:
                    report = [{"task_run_id": run["id"], "state": {"type": state_type}}]
                    r = await c.post("/api/task_runs/states", json=report)
                    if r.status_code != 200 or r.json()[0]["status"] != "ACCEPT":
                        errors.append(f"{r.status_code} {r.text[:200]}")

    start = time.perf_counter()
    await asyncio.gather(*(writer(i) for i in range(writers)))
    elapsed = time.perf_counter() - start
    async with httpx.AsyncClient(base_url=urls[0], trust_env=False, timeout=120) as http:
        flt = {"flow_run_id": fr["id"], "state_types": ["COMPLETED"], "limit": 50_000}
        completed = (await http.post("/api/task_runs/filter", json=flt)).json()
        sample = [runs[0]["id"], runs[-1]["id"]]
        histories = [(await http.get(f"/api/task_runs/{i}/states")).json() for i in sample]
    return {
        "errors": errors,
        "completed": len(completed),
        "expected": len(runs),
        "run_counts": {r["run_count"] for r in completed},
        "histories": [[s["type"] for s in h] for h in histories],
        "rate": writers * per_writer / elapsed,
    }


def _assert_nothing_lost(outcome: dict[str, Any]) -> None:
    assert outcome["errors"] == [], outcome["errors"][:5]
    assert outcome["completed"] == outcome["expected"]
    assert outcome["run_counts"] == {1}
    assert outcome["histories"] == [["PENDING", "RUNNING", "COMPLETED"]] * 2


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_concurrent_writers(served: str) -> None:
    """20 concurrent writers x 500 single-report requests: no error, no lost row."""
    outcome = asyncio.run(_load([served]))
    _assert_nothing_lost(outcome)
    print(f"\n{outcome['rate']:.0f} single reports/s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server_process(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFRAY_")}
    env["PREFRAY_HOME"] = str(home)
    return subprocess.Popen(
        [sys.executable, "-m", "prefray.server", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _wait_up(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.stderr.read().decode() if process.stderr else "exited")
        try:
            if httpx.get(f"{url}/api/health", trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"{url} not up after {timeout}s")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_server_processes_share_one_sqlite_file(tmp_path: Path) -> None:
    """Two servers (two embedded drivers) start at once on one file and take writes
    concurrently: migrations do not collide, and no write fails with 'database is locked'."""
    ports = [_free_port(), _free_port()]
    processes = [_start_server_process(tmp_path, port) for port in ports]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url, process in zip(urls, processes, strict=True):
            _wait_up(url, process)
        outcome = asyncio.run(_load(urls, writers=10, per_writer=300))
        _assert_nothing_lost(outcome)
    finally:
        for process in processes:
            process.terminate()  # our own children, by handle
            process.wait(timeout=10)
    assert (tmp_path / "prefray.db").exists()


def test_module_entry_refuses_public_bind_without_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFRAY_")}
    env["PREFRAY_HOME"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "prefray.server", "--host", "0.0.0.0", "--port", "0"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert b"PREFRAY_API_KEY" in done.stderr
