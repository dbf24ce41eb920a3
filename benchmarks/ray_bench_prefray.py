"""For `ray_bench.py`: the prefray side of each workload, on `RayTaskRunner`.

Runs in a child process whose `PREFRAY_API_URL` points at the counting API
server; the requests a workload causes are counted around its timed flow (and
until every one of its runs has been recorded).
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx
import ray_bench as bench

from prefray import flow, task
from prefray.client import get_client
from prefray.settings import get_current_settings
from task_runners import RayTaskRunner

INIT_KWARGS = {"num_cpus": bench.NUM_CPUS, "include_dashboard": False, "configure_logging": False}


@task
def inc(x: int) -> int:
    return x + 1


@task
def nap() -> None:
    time.sleep(bench.W3_SLEEP)


@task
def produce() -> Any:
    import numpy as np

    return np.ones(bench.W4_BYTES // 8, dtype=np.float64)


@task
def consume(array: Any) -> float:
    return float(array[::4096].sum())


def runner() -> RayTaskRunner:
    return RayTaskRunner(init_kwargs=INIT_KWARGS)


@flow(task_runner=runner())
def w1(n: int) -> list[int]:
    futures = inc.map(range(n))
    return [f.result() for f in futures]


@flow(task_runner=runner())
def w3() -> None:
    for f in [nap.submit() for _ in range(bench.W3_TASKS)]:
        f.wait()


@flow(task_runner=runner())
def w4() -> list[float]:
    data = produce.submit()
    return [c.result() for c in [consume.submit(data) for _ in range(bench.W4_CONSUMERS)]]


@flow(task_runner=runner())
def w5() -> int:
    future = inc.submit(0)
    for _ in range(bench.W5_STEPS - 1):
        future = inc.submit(future)
    return future.result()


@task
def busy() -> int:
    time.sleep(0.3)
    return os.getpid()


@flow(task_runner=runner())
def warm_up_round() -> list[int]:
    return [f.result() for f in [busy.submit() for _ in range(bench.NUM_CPUS)]]


def warm_up() -> int:
    """As the raw side: rounds until every worker has run a prefray task."""
    return bench.warm_until_all_started(warm_up_round)


def requests_so_far() -> int:
    base = get_current_settings().api_url.rstrip("/").removesuffix("/api")
    return int(httpx.get(base + "/_bench/requests", timeout=10).json()["requests"])


def recorded(flow_run_id: Any) -> tuple[int, int]:
    """(task runs recorded, of which in a final state)."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_id=flow_run_id, limit=50_000)
    final = sum(1 for r in runs if r.state is not None and r.state.is_final())
    return len(runs), final


def timed_flow(flow_fn: Any, *args: Any) -> tuple[float, Any, int]:
    before = requests_so_far()
    t0 = time.perf_counter()
    state = flow_fn(*args, return_state=True)
    wall = time.perf_counter() - t0
    state.result()
    return wall, state, requests_so_far() - before


def run(workload: str, n: int, start: float) -> dict[str, Any]:
    import ray

    if workload == "startup":
        value = w1(1)
        assert value == [1]
        return {"first_result_s": time.time() - start}
    ray.init(**INIT_KWARGS)  # shared by every flow below (the runner reuses it)
    warm_up()  # every worker started, with prefray imported in it
    if workload == "w1":
        wall, state, requests = timed_flow(w1, n)
        runs, final = recorded(state.state_details.flow_run_id)
        assert runs == n and final == n, (runs, final)
        return {"wall_s": wall, "api_requests": requests, "recorded": final}
    if workload == "w3":
        wall, _, requests = timed_flow(w3)
        return {"wall_s": wall, "api_requests": requests}
    if workload == "w4":
        with bench.RssSampler() as rss:
            wall, _, requests = timed_flow(w4)
        return {
            "wall_s": wall,
            "peak_rss_mb": rss.peak / 2**20,
            "rss_growth_mb": (rss.peak - rss.baseline) / 2**20,
            "api_requests": requests,
        }
    wall, state, requests = timed_flow(w5)
    assert state.result() == bench.W5_STEPS
    return {"wall_s": wall, "step_ms": wall / bench.W5_STEPS * 1000, "api_requests": requests}
