"""API throughput over a real port, on SQLite and PostgreSQL.

    .venv/bin/python benchmarks/api_throughput.py [--n 10000] [--single 1000]
        [--concurrency 8] [--no-postgres]

Measures task runs created per second (one per request, and in bulk),
task-run state reports ingested per second (one per request, and batched),
task runs created carrying their Running and Completed states (one item
per task run instead of three; answered in full, then with `?answer=minimal`
as the driver's reporter asks), and single-item requests sent one after
another by one client ("1x1" rows: what a short flow, or each step of a chain
of dependent tasks, asks), and prints a table. The server runs in its own
process (`python -m prefray.server`), so client and server do not share a GIL. PostgreSQL is a
throw-away database on 127.0.0.1:5432, dropped afterwards.

A second table gives the server process's CPU time per item (from
/proc/<pid>/stat, Linux only): on a shared machine wall-clock rates move
with the load, CPU per item much less. (On PostgreSQL it leaves out the
database's own processes.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

BATCH = 1000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0.0 where /proc is missing)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def _server(database_url: str | None) -> Iterator[tuple[str, int]]:
    home = tempfile.mkdtemp(prefix="prefray-bench-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFRAY_")}
    env["PREFRAY_HOME"] = home
    if database_url:
        env["PREFRAY_API_DATABASE_URL"] = database_url
    port = _free_port()
    cmd = [sys.executable, "-m", "prefray.server", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(cmd, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/health", trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the benchmark server did not start") from None
                time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def _task(flow_run_id: str, i: int) -> dict[str, Any]:
    return {
        "name": f"t-{i}",
        "flow_run_id": flow_run_id,
        "task_key": "bench",
        "dynamic_key": str(i),
    }


class _Meter:
    """Items per second, and server CPU microseconds per item, of one operation."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rates: dict[str, float] = {}
        self.cpu_us: dict[str, float] = {}

    @contextmanager
    def measure(self, name: str, items: int) -> Iterator[None]:
        cpu, start = _cpu_seconds(self.pid), time.perf_counter()
        yield
        self.rates[name] = items / (time.perf_counter() - start)
        self.cpu_us[name] = (_cpu_seconds(self.pid) - cpu) * 1e6 / items


async def _concurrently(n: int, workers: int, one: Callable[[int], Awaitable[None]]) -> None:
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            await one(i)

    await asyncio.gather(*(worker() for _ in range(workers)))


async def _measure(url: str, meter: _Meter, n: int, single: int, workers: int) -> None:
    limits = httpx.Limits(max_connections=workers)
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=300, limits=limits) as c:
        fr = (await c.post("/api/flow_runs/", json={"flow_name": "bench"})).json()["id"]
        singles: list[str] = []

        async def create_one(i: int) -> None:
            r = await c.post("/api/task_runs/", json=_task(fr, i))
            r.raise_for_status()
            singles.append(r.json()["id"])

        with meter.measure("create, 1 per request", single):
            await _concurrently(single, workers, create_one)

        runs: list[str] = []
        with meter.measure(f"create, bulk of {BATCH * 10}", n):
            for lo in range(0, n, BATCH * 10):
                body = [_task(fr, single + i) for i in range(lo, min(n, lo + BATCH * 10))]
                r = await c.post("/api/task_runs/bulk", json=body)
                r.raise_for_status()
                runs.extend(t["id"] for t in r.json())

        async def report_one(i: int) -> None:
            report = [{"task_run_id": singles[i], "state": {"type": "RUNNING"}}]
            r = await c.post("/api/task_runs/states", json=report)
            r.raise_for_status()

        with meter.measure("state report, 1 per request", single):
            await _concurrently(single, workers, report_one)

        with meter.measure(f"state report, batches of {BATCH}", 2 * n):
            for state_type in ("RUNNING", "COMPLETED"):
                for lo in range(0, n, BATCH):
                    tid = str(uuid.uuid4())
                    body = [
                        {"task_run_id": rid, "state": {"type": state_type,
                                                       "state_details": {"transition_id": tid}}}
                        for rid in runs[lo : lo + BATCH]
                    ]  # fmt: skip
                    r = await c.post("/api/task_runs/states", json=body)
                    r.raise_for_status()

        # a task run's whole short life as one item: what the reporter sends for a run
        # created, run and finished within one batch (per task run: 1 item, not 3)
        carried = [{"type": "RUNNING"}, {"type": "COMPLETED"}]
        with meter.measure("create carrying Running+Completed", n):
            for lo in range(0, n, BATCH * 10):
                body = [{**_task(fr, single + n + i), "states": carried}
                        for i in range(lo, min(n, lo + BATCH * 10))]  # fmt: skip
                r = await c.post("/api/task_runs/bulk", json=body)
                r.raise_for_status()

        # the same, answered as the reporter asks: null for each run created as sent
        with meter.measure("the same, ?answer=minimal", n):
            for lo in range(0, n, BATCH * 10):
                body = [{**_task(fr, single + 2 * n + i), "states": carried}
                        for i in range(lo, min(n, lo + BATCH * 10))]  # fmt: skip
                r = await c.post("/api/task_runs/bulk?answer=minimal", json=body)
                r.raise_for_status()


async def _measure_one_by_one(url: str, meter: _Meter, single: int) -> None:
    """Single-item requests sent one after another (a short flow's, or one step of a
    chain's): server CPU per request of each kind."""
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=60) as c:

        async def ok(method: str, path: str, body: Any = None) -> Any:
            r = await c.request(method, path, json=body)
            r.raise_for_status()
            return r.json()

        flows: list[str] = []
        with meter.measure("1x1: create flow run", single):
            for _ in range(single):
                body = {"id": str(uuid.uuid4()), "flow_name": "one", "parameters": {"x": 1},
                        "state": {"type": "PENDING"}}  # fmt: skip
                flows.append((await ok("POST", "/api/flow_runs/", body))["id"])
        for state in ("RUNNING", "COMPLETED"):
            with meter.measure(f"1x1: flow run -> {state.title()}", single):
                for fr in flows:
                    body = {"state": {"type": state}}
                    await ok("POST", f"/api/flow_runs/{fr}/set_state", body)
        tasks: list[str] = []
        with meter.measure("1x1: create task run", single):
            for i in range(single):
                body = {**_task(flows[0], i), "id": str(uuid.uuid4())}
                tasks.append((await ok("POST", "/api/task_runs/", body))["id"])
        with meter.measure("1x1: states, Running+Completed", single):
            for tr in tasks:
                body = [{"task_run_id": tr, "state": {"type": t}} for t in ("RUNNING", "COMPLETED")]
                await ok("POST", "/api/task_runs/states?answer=minimal", body)
        with meter.measure("1x1: create 3 logs", single):
            for i in range(single):
                body = [{"level": 20, "message": f"line {i}.{j}", "flow_run_id": flows[0],
                         "timestamp": "2024-01-01T00:00:00Z"} for j in range(3)]  # fmt: skip
                await ok("POST", "/api/logs/", body)
        with meter.measure("1x1: GET flow run", single):
            for fr in flows:
                await ok("GET", f"/api/flow_runs/{fr}")


async def _create_pg() -> str:
    import asyncpg

    name = f"prefray_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return name


async def _drop_pg(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


def _run(database_url: str | None, args: argparse.Namespace) -> _Meter:
    with _server(database_url) as (url, pid):
        meter = _Meter(pid)
        asyncio.run(_measure(url, meter, args.n, args.single, args.concurrency))
        asyncio.run(_measure_one_by_one(url, meter, args.single))
    return meter


def _table(title: str, results: dict[str, dict[str, float]], fmt: str) -> None:
    backends = list(results)
    rows = list(next(iter(results.values())))
    print(f"\n{title}")
    print(f"| {'operation':<32} | " + " | ".join(f"{b:>10}" for b in backends) + " |")
    print(f"|{'-' * 34}|" + "|".join("-" * 12 for _ in backends) + "|")
    for row in rows:
        print(
            f"| {row:<32} | " + " | ".join(f"{results[b][row]:>10{fmt}}" for b in backends) + " |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="task runs for the bulk paths")
    parser.add_argument("--single", type=int, default=1_000, help="requests for the 1-per paths")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    meters = {"SQLite": _run(None, args)}
    if not args.no_postgres:
        name = asyncio.run(_create_pg())
        try:
            meters["PostgreSQL"] = _run(
                f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}", args
            )
        finally:
            asyncio.run(_drop_pg(name))
    what = (f"N={args.n} (bulk/batched), {args.single} single requests, "
            f"{args.concurrency} concurrent clients")  # fmt: skip
    _table(f"{what}; items per second", {b: m.rates for b, m in meters.items()}, ",.0f")
    _table(
        "server process CPU, microseconds per item",
        {b: m.cpu_us for b, m in meters.items()},
        ",.1f",
    )


if __name__ == "__main__":
    main()
