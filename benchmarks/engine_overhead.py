"""Engine overhead: trivial tasks through prefray vs a plain Python loop.

For N in (1,000, 10,000), each way of calling a task (`task()`, `.submit()`,
`.map()`) on the sequential and the concurrent runner, every run recorded in
the embedded API (SQLite): the per-task overhead in microseconds over a plain
loop of the same function, and the API requests per task run (counted in the
client's send path). Run: `.venv/bin/python benchmarks/engine_overhead.py [N ...]`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from prefray import flow, task
from prefray.client import clients
from prefray.testing import prefray_test_harness
from task_runners import ConcurrentTaskRunner, SequentialTaskRunner

_requests = 0


def _count_requests() -> None:
    """Wrap the clients' one send method with a counter (benchmark-only)."""
    for cls in (clients.SyncPrefrayClient, clients.PrefrayClient):
        original = cls._send

        def counted(self: Any, call: Any, _original: Any = original) -> Any:
            global _requests
            _requests += 1
            return _original(self, call)

        cls._send = counted  # type: ignore[method-assign]


def trivial(x: int) -> int:
    return x + 1


trivial_task = task(trivial)


def plain_loop(n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        trivial(i)
    return time.perf_counter() - start


_body_seconds = 0.0
_body_cpu = 0.0


def _flow_body(mode: str, n: int) -> Callable[[], int]:
    def body() -> int:
        global _body_seconds, _body_cpu
        start, cpu = time.perf_counter(), time.thread_time()
        if mode == "call":
            total = sum(trivial_task(i) for i in range(n))
        elif mode == "submit":
            total = sum(f.result() for f in [trivial_task.submit(i) for i in range(n)])
        else:
            total = sum(f.result() for f in trivial_task.map(range(n)))
        _body_seconds = time.perf_counter() - start
        _body_cpu = time.thread_time() - cpu
        return total

    return body


def measure(runner: Any, mode: str, n: int) -> tuple[float, float, float, float]:
    body = flow(name=f"bench-{mode}", task_runner=runner)(_flow_body(mode, n))
    body()  # warm-up: imports, first connections, table pages
    before = _requests
    start = time.perf_counter()
    result = body()
    elapsed = time.perf_counter() - start
    assert result == sum(range(1, n + 1))
    return elapsed, _body_seconds, (_requests - before) / n, _body_cpu


def main(sizes: list[int]) -> None:
    _count_requests()
    runners = {
        "sequential": SequentialTaskRunner,
        "concurrent": lambda: ConcurrentTaskRunner(max_workers=8),
    }
    # the API in its own process, as in embedded mode's default: it does not share our GIL
    with prefray_test_harness(mode="subprocess"):
        # engine us/task: the flow body (the driver's cost; recording continues in the
        # background); recorded us/task: the whole flow run, until the API holds
        # every task run's final state; main cpu us/task: the CPU time of the flow's
        # thread in the body (steadier than wall time on a shared machine).
        print(
            f"{'N':>6} {'runner':<11} {'how':<7} {'total s':>8} "
            f"{'engine us/task':>15} {'recorded us/task':>17} {'req/run':>8} "
            f"{'main cpu us/task':>17}"
        )
        for n in sizes:
            base = plain_loop(n)
            print(f"{n:>6} {'plain loop':<19} {base:>8.4f} {base / n * 1e6:>8.2f}")
            for runner_name, make in runners.items():
                for mode in ("call", "submit", "map"):
                    elapsed, body, per_run, cpu = measure(make(), mode, n)
                    engine = (body - base) / n * 1e6
                    recorded = (elapsed - base) / n * 1e6
                    row = f"{n:>6} {runner_name:<11} {mode:<7} {elapsed:>8.3f}"
                    row += f" {engine:>15.1f} {recorded:>17.1f} {per_run:>8.4f}"
                    print(f"{row} {cpu / n * 1e6:>17.1f}", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1_000, 10_000])
