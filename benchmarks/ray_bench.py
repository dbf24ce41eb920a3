"""prefray on `RayTaskRunner` side by side with raw Ray, printed as ratios.

    .venv/bin/python benchmarks/ray_bench.py            # every workload
    .venv/bin/python benchmarks/ray_bench.py --only w1,w5 --n 1000

Workloads (each side in a fresh process with `ray.init(num_cpus=8)`, after a
warm-up that runs busy tasks until 8 distinct workers have each run one, so
neither side pays for worker start-up inside the timed part):

- W1  N trivial mapped tasks (N = 1,000 and 10,000); prefray checks afterwards
      that every task run is recorded with a final state.
- W3  64 tasks sleeping 0.5 s on 8 logical CPUs.
- W4  a 50 MB numpy array made by one task, consumed by 8: wall time and the
      driver's peak RSS (absolute, and growth over the pre-workload baseline).
- W5  a chain of 200 dependent tasks: per-step latency.
- startup  a cold process: time to the first task's result (raw: `ray.init()`
      alone, and its first result).

The prefray side talks to an API server run by this script in a subprocess
with a request counter in front of it, so the table also gives the API
requests per task run (driver and workers together).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

START = time.time()  # as early as possible: the startup workload measures from here

NUM_CPUS = 8
W3_TASKS, W3_SLEEP = 64, 0.5
W4_BYTES, W4_CONSUMERS = 50 * 1024 * 1024, 8
W5_STEPS = 200
REPO_ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- measuring
class RssSampler:
    """The driver's peak RSS over a block, sampled every 2 ms."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.baseline = self._proc.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


# ---------------------------------------------------------------- raw Ray
def raw_side(workload: str, n: int) -> dict[str, Any]:
    import ray

    t_import = time.time()
    ray.init(num_cpus=NUM_CPUS, include_dashboard=False, configure_logging=False)
    t_init = time.time()

    @ray.remote
    def inc(x: int) -> int:
        return x + 1

    if workload == "startup":
        ray.get(inc.remote(1))
        return {
            "init_s": t_init - START,
            "init_only_s": t_init - t_import,
            "first_result_s": time.time() - START,
        }

    @ray.remote
    def warm() -> int:
        time.sleep(0.3)
        return os.getpid()

    # busy tasks until NUM_CPUS distinct workers have each run one (a round can
    # reuse a worker while Ray still starts another): both sides warm alike
    warm_until_all_started(lambda: ray.get([warm.remote() for _ in range(NUM_CPUS)]))
    return RAW[workload](ray, inc, n)


def warm_until_all_started(round_of_pids: Callable[[], list[int]], rounds: int = 6) -> int:
    """Run warm-up rounds until NUM_CPUS distinct worker pids were seen (at most
    `rounds`); the number of distinct workers seen."""
    seen: set[int] = set()
    for _ in range(rounds):
        seen.update(round_of_pids())
        if len(seen) >= NUM_CPUS:
            break
    return len(seen)


def raw_w1(ray: Any, inc: Any, n: int) -> dict[str, Any]:
    wall, out = timed(lambda: ray.get([inc.remote(i) for i in range(n)]))
    assert out == [i + 1 for i in range(n)]
    return {"wall_s": wall}


def raw_w3(ray: Any, inc: Any, n: int) -> dict[str, Any]:
    @ray.remote
    def nap() -> None:
        time.sleep(W3_SLEEP)

    wall, _ = timed(lambda: ray.get([nap.remote() for _ in range(W3_TASKS)]))
    return {"wall_s": wall}


def raw_w4(ray: Any, inc: Any, n: int) -> dict[str, Any]:
    @ray.remote
    def produce() -> Any:
        import numpy as np

        return np.ones(W4_BYTES // 8, dtype=np.float64)

    @ray.remote
    def consume(array: Any) -> float:
        return float(array[::4096].sum())

    def run() -> list[float]:
        data = produce.remote()
        return ray.get([consume.remote(data) for _ in range(W4_CONSUMERS)])

    with RssSampler() as rss:
        wall, out = timed(run)
    assert out[0] == len(range(0, W4_BYTES // 8, 4096))
    return {"wall_s": wall, "peak_rss_mb": rss.peak / 2**20, "rss_growth_mb": _growth(rss)}


def raw_w5(ray: Any, inc: Any, n: int) -> dict[str, Any]:
    def run() -> int:
        ref = inc.remote(0)
        for _ in range(W5_STEPS - 1):
            ref = inc.remote(ref)
        return ray.get(ref)

    wall, out = timed(run)
    assert out == W5_STEPS
    return {"wall_s": wall, "step_ms": wall / W5_STEPS * 1000}


RAW: dict[str, Callable[[Any, Any, int], dict[str, Any]]] = {
    "w1": raw_w1,
    "w3": raw_w3,
    "w4": raw_w4,
    "w5": raw_w5,
}


def _growth(rss: RssSampler) -> float:
    return (rss.peak - rss.baseline) / 2**20


# ---------------------------------------------------------------- prefray
def prefray_side(workload: str, n: int) -> dict[str, Any]:
    timing: dict[str, float] = {}
    if workload == "startup":
        _time_ray_init(timing)
    import ray_bench_prefray  # imported here: the startup workload times this import

    out = ray_bench_prefray.run(workload, n, START)
    if "ray_init_s" in timing:
        out["init_only_s"] = timing["ray_init_s"]
    return out


def _time_ray_init(timing: dict[str, float]) -> None:
    """Record how long the runner's own `ray.init` takes: it swings by seconds
    between processes on a busy machine, so startup is also compared without it."""
    from task_runners.ray import connection

    init = connection._init

    def timed_init(*args: Any, **kwargs: Any) -> None:
        t0 = time.time()
        try:
            init(*args, **kwargs)
        finally:
            timing["ray_init_s"] = time.time() - t0

    connection._init = timed_init  # type: ignore[assignment]


# ---------------------------------------------------------------- driver
CASES: list[tuple[str, int]] = [
    ("startup", 0),
    ("w1", 1000),
    ("w1", 10000),
    ("w3", 0),
    ("w4", 0),
    ("w5", 0),
]


def run_child(side: str, workload: str, n: int, env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__)), "--child", side, workload, str(n)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout)[-1500:]}
    return json.loads(lines[-1])


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated: startup,w1,w3,w4,w5")
    parser.add_argument("--n", default="", help="W1 sizes, comma-separated (default 1000,10000)")
    parser.add_argument("--side", choices=["both", "raw", "prefray"], default="both")
    parser.add_argument("--child", nargs=3, metavar=("SIDE", "WORKLOAD", "N"))
    args = parser.parse_args(argv)
    if args.child:
        side, workload, n = args.child
        fn = raw_side if side == "raw" else prefray_side
        print(json.dumps(fn(workload, int(n))), flush=True)
        return
    cases = select_cases(args.only, args.n)
    sides = ["raw", "prefray"] if args.side == "both" else [args.side]
    from ray_bench_server import CountingServer, print_table

    results: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    with CountingServer() as server:
        env = dict(os.environ, PREFRAY_API_URL=server.api_url, PREFRAY_HOME=server.home)
        for workload, n in cases:
            for side in sides:
                out = run_child(side, workload, n, env)
                results.setdefault((workload, n), {})[side] = out
                print(f"  {workload} n={n} {side}: {out}", file=sys.stderr, flush=True)
    print_table(results)
    print_startup_without_init(results.get(("startup", 0), {}))


def print_startup_without_init(sides: dict[str, dict[str, Any]]) -> None:
    """Startup minus each process's own `ray.init` (raw: its import of Ray and
    first result; prefray: imports, the flow run, the probe, the first run, the
    flow's end)."""
    raw, pre = sides.get("raw", {}), sides.get("prefray", {})
    if "init_only_s" not in raw or "init_only_s" not in pre:
        return
    raw_rest = raw["init_s"] - raw["init_only_s"]
    pre_rest = pre["first_result_s"] - pre["init_only_s"]
    print(
        f"startup without ray.init itself: raw {raw_rest:.3f} s (import ray), prefray "
        f"{pre_rest:.3f} s (to the first result): {pre_rest - raw_rest:+.3f} s"
    )


def select_cases(only: str, sizes: str) -> list[tuple[str, int]]:
    wanted = {w for w in only.split(",") if w} or {w for w, _ in CASES}
    w1_sizes = [int(s) for s in sizes.split(",") if s] or [n for w, n in CASES if w == "w1"]
    cases: list[tuple[str, int]] = []
    for workload, n in CASES:
        if workload not in wanted or (workload, n) in cases:
            continue
        if workload == "w1":
            cases.extend(("w1", size) for size in w1_sizes if ("w1", size) not in cases)
        else:
            cases.append((workload, n))
    return cases


if __name__ == "__main__":
    sys.path[:0] = [str(Path(__file__).resolve().parent), str(REPO_ROOT)]
    main(sys.argv[1:])
