"""Embedded API: a thread in the driver, or a subprocess? Measure both.

    .venv/bin/python benchmarks/embedded_mode.py            # both modes, a table
    .venv/bin/python benchmarks/embedded_mode.py --json     # the figures as JSON
    .venv/bin/python benchmarks/embedded_mode.py --mode thread --repeat 1

Each mode is measured in a fresh Python process (so import costs count, as
they do for a real driver), on a fresh SQLite database in a temp dir:

- startup: from `start_api()` to the first healthy answer, cold imports included;
- sequential round trips: `health()` (no database) and `create_flow_run()`
  (one write) per second through the sync client;
- bulk: 10,000 task runs created, then 10,000 Running + 10,000 Completed
  reported in batches, as the engine does for a large `.map()`;
- busy driver: `health()` and `create_flow_run()` latency (p50/p95) while two
  threads in the driver run pure-Python code, as tasks on a
  `ConcurrentTaskRunner` do: a thread-mode server then competes for the GIL.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

MODES = ("thread", "subprocess")


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1)


def _latencies(fn: Any, count: int) -> dict[str, float]:
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[int(len(samples) * 0.95) - 1], 2),
    }


def _bulk(client: Any, n: int) -> dict[str, float]:
    from prefray.schemas import StateReport, TaskRunCreate
    from prefray.states import Completed, Running

    flow_run = client.create_flow_run("bulk")
    creates = [
        TaskRunCreate(name=f"t-{i}", flow_run_id=flow_run.id, task_key="t", dynamic_key=str(i))
        for i in range(n)
    ]
    began = time.perf_counter()
    runs = client.create_task_runs(creates)
    created = time.perf_counter() - began
    began = time.perf_counter()
    for state in (Running, Completed):
        reports = [StateReport(task_run_id=r.id, state=state()) for r in runs]
        for i in range(0, n, 1000):  # the engine's default state_batch_size
            client.report_task_run_states(reports[i : i + 1000])
    reported = time.perf_counter() - began
    return {
        "create_task_runs_per_s": _rate(n, created),
        "state_reports_per_s": _rate(2 * n, reported),
    }


def _spin(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(2000))


def _under_busy_driver(client: Any, count: int) -> dict[str, Any]:
    stop = threading.Event()
    spinners = [threading.Thread(target=_spin, args=(stop,), daemon=True) for _ in range(2)]
    for spinner in spinners:
        spinner.start()
    try:
        return {
            "health": _latencies(client.health, count),
            "create_flow_run": _latencies(lambda: client.create_flow_run("busy"), count // 2),
        }
    finally:
        stop.set()
        for spinner in spinners:
            spinner.join()


def measure(mode: str, bulk_n: int) -> dict[str, Any]:
    """Run in a fresh process: start an embedded API in `mode` and time it."""
    began = time.perf_counter()
    from prefray.client import SyncPrefrayClient
    from prefray.client.embedded import start_api
    from prefray.settings import Settings

    home = Path(tempfile.mkdtemp(prefix=f"prefray-bench-{mode}-"))
    server = start_api(Settings(home=home), mode=mode)  # type: ignore[arg-type]
    startup = time.perf_counter() - began
    try:
        client = SyncPrefrayClient(settings=Settings(home=home, api_url=server.url))
        client.health()
        idle = {
            "health": _latencies(client.health, 300),
            "create_flow_run": _latencies(lambda: client.create_flow_run(uuid.uuid4().hex), 150),
        }
        return {
            "mode": mode,
            "startup_s": round(startup, 3),
            "idle": idle,
            "bulk": _bulk(client, bulk_n),
            "busy_driver": _under_busy_driver(client, 200),
        }
    finally:
        server.stop()


def _in_fresh_process(mode: str, bulk_n: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--bulk", str(bulk_n)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def _table(results: list[dict[str, Any]]) -> str:
    rows = [
        ("startup (s, cold imports)", lambda r: r["startup_s"]),
        ("health p50 ms, idle", lambda r: r["idle"]["health"]["p50_ms"]),
        ("create_flow_run p50 ms, idle", lambda r: r["idle"]["create_flow_run"]["p50_ms"]),
        ("create_task_runs / s", lambda r: r["bulk"]["create_task_runs_per_s"]),
        ("state reports / s", lambda r: r["bulk"]["state_reports_per_s"]),
        ("health p50/p95 ms, busy driver", lambda r: _pair(r["busy_driver"]["health"])),
        ("create p50/p95 ms, busy driver", lambda r: _pair(r["busy_driver"]["create_flow_run"])),
    ]
    modes = [r["mode"] for r in results]
    lines = [f"{'':34}" + "".join(f"{m:>18}" for m in modes)]
    for label, get in rows:
        lines.append(f"{label:34}" + "".join(f"{get(r)!s:>18}" for r in results))
    return "\n".join(lines)


def _pair(latency: dict[str, float]) -> str:
    return f"{latency['p50_ms']}/{latency['p95_ms']}"


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda r: r["startup_s"])[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=MODES, action="append")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per mode")
    parser.add_argument("--bulk", type=int, default=10_000, help="task runs in the bulk test")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.bulk)))
        return
    results = []
    for mode in args.mode or MODES:
        runs = [_in_fresh_process(mode, args.bulk) for _ in range(args.repeat)]
        result = _median_run(runs)
        result["startup_all_s"] = [r["startup_s"] for r in runs]
        results.append(result)
    print(json.dumps(results, indent=2) if args.json else _table(results))


if __name__ == "__main__":
    main()
