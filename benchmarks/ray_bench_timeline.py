"""Diagnostics for `ray_bench.py`: where a W4 or W5 flow's time goes, as a timeline.

    .venv/bin/python benchmarks/ray_bench_timeline.py w4 --runs 3
    .venv/bin/python benchmarks/ray_bench_timeline.py w5 --runs 3 --all

Runs the workload's flow as `ray_bench_prefray` does (its own counting API
server, `ray.init(num_cpus=8)`, the warm-up flow), `--runs` times in one
process: run 0 is the run `ray_bench.py` measures, later runs are warm. The
driver's steps are timed by wrapping them in this process only (flow run
created, Running, each submission, the monitor's wake-ups, `.result()`, the
final reports, the log flush: each HTTP request with its path); the workers'
phases (arguments deserialised, executed, outputs stored) come from Ray's own
task events (`ray.timeline()`), by worker. Nothing here changes what
`ray_bench.py` measures; the wrappers cost the driver a few microseconds a step.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
EVENTS: list[tuple[float, str, str]] = []
_lock = threading.Lock()


def record(what: str, detail: str = "") -> None:
    with _lock:
        EVENTS.append((time.time(), what, detail))


def wrap(owner: Any, name: str, label: str, detail: Callable[..., str] | None = None) -> None:
    """Record `label>` and `label<` around `owner.name` (skipped if it is gone)."""
    original = getattr(owner, name, None)
    if original is None:
        print(f"(timeline: {owner.__name__}.{name} not found, not timed)", file=sys.stderr)
        return

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        text = detail(*args, **kwargs) if detail else ""
        record(label + ">", text)
        try:
            return original(*args, **kwargs)
        finally:
            record(label + "<", text)

    setattr(owner, name, timed)


def instrument() -> None:
    import httpx

    import prefray.engine.flow_run as flow_run
    import prefray.engine.reporting as reporting
    import prefray.futures as futures
    import task_runners.ray.monitor as monitor
    import task_runners.ray.runner as runner
    import task_runners.ray.submission as submission
    from task_runners.ray.futures import RayFuture

    wrap(httpx.Client, "send", "HTTP", lambda self, req, **kw: f"{req.method} {req.url.path}")
    engine = flow_run.FlowRunEngine
    wrap(engine, "_create_run", "create flow run")
    wrap(engine, "_propose", "propose", lambda self, state: state.name)
    wrap(engine, "_call_sync", "body")
    wrap(engine, "_propose_final", "final state")
    wrap(engine, "finish", "finish")
    wrap(runner.RayTaskRunner, "_start", "runner start")
    wrap(runner.RayTaskRunner, "_stop", "runner stop")
    wrap(runner.RayTaskRunner, "submit", "submit", lambda self, call: call.task_run.name)
    wrap(submission.Submitter, "send", "ray .remote()", lambda self, plan, n: "")
    wrap(monitor.Monitor, "_on_done_many", "monitor handles", lambda self, a, o: f"{len(a)} runs")
    wrap(futures.PrefrayFuture, "result", "result()", lambda self, *a, **k: self.name)
    wrap(reporting.StateReporter, "flush", "reporter flush")
    wrap(RayFuture, "set_final", "final", lambda self, state: f"{self.name} {state.name}")


def run(workload: str, runs: int, show_all: bool) -> None:
    import ray
    import ray_bench_prefray as bench

    ray.init(**bench.INIT_KWARGS)
    bench.warm_up()
    instrument()
    flow = {"w4": bench.w4, "w5": bench.w5}[workload]
    starts = []
    for i in range(runs):
        EVENTS.clear()
        t0 = time.time()
        record("flow call>")
        state = flow(return_state=True)
        record("flow call<")
        state.result()
        starts.append(t0)
        print(f"\n=== {workload} run {i} ({'measured' if i == 0 else 'warm'})")
        show(list(EVENTS), t0, workload, show_all)
        time.sleep(0.3)
    time.sleep(2.5)  # Ray ships its task events about once a second
    show_workers(ray.timeline(), starts)


def show(events: list[tuple[float, str, str]], t0: float, workload: str, show_all: bool) -> None:
    noisy = ("final", "submit", "ray .remote()", "result()")
    for when, what, detail in events:
        if show_all or workload == "w4" or not what.startswith(noisy):
            print(f"{(when - t0) * 1000:9.2f} ms  {what:20s} {detail}")
    marks = {what: when for when, what, _ in reversed(events)}  # first occurrence
    last = {what: when for when, what, _ in events}
    body, body_end, end = marks.get("body>"), last.get("body<"), last.get("flow call<")
    if body and body_end and end:
        print(
            f"--- before the body {(body - t0) * 1000:.1f} ms, body {(body_end - body) * 1000:.1f}"
            f" ms, after it {(end - body_end) * 1000:.1f} ms, total {(end - t0) * 1000:.1f} ms"
        )


def show_workers(events: list[dict[str, Any]], starts: list[float]) -> None:
    """Each Ray task by worker: when (warm-up or run i), deserialise/execute/total ms."""
    tasks: dict[str, list[list[Any]]] = {}
    phases = []
    for e in events:
        if e.get("ph") != "X":
            continue
        if str(e.get("cat", "")).startswith("task::"):
            tasks.setdefault(e["tid"], []).append(
                [e["ts"] / 1e6, e["dur"] / 1e3, e["cat"][6:], 0, 0]
            )
        elif e.get("cat") in ("task:deserialize_arguments", "task:execute"):
            phases.append(e)
    for e in phases:
        for t in tasks.get(e["tid"], []):
            if t[0] - 1e-4 <= e["ts"] / 1e6 <= t[0] + t[1] / 1000:
                t[3 if e["cat"] == "task:deserialize_arguments" else 4] = e["dur"] / 1e3

    def when(t: float) -> str:
        runs = [i for i, start in enumerate(starts) if t >= start]
        return f"run{runs[-1]}+{(t - starts[runs[-1]]) * 1000:.0f}ms" if runs else "warm-up"

    print("\n=== Ray tasks by worker: when, name, deserialise/execute/total ms")
    steps: list[float] = []
    for tid, ts in sorted(tasks.items(), key=lambda kv: min(t[0] for t in kv[1])):
        ts.sort()
        cells = [f"{when(t[0])} {t[2]} {t[3]:.1f}/{t[4]:.1f}/{t[1]:.1f}" for t in ts]
        print(f"worker {tid[-8:]}: " + " | ".join(cells[:12]) + (" ..." if len(cells) > 12 else ""))
        steps.extend(t[1] for t in ts)
    if steps:
        print(f"task total: median {statistics.median(steps):.2f} ms over {len(steps)} tasks")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=["w4", "w5"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--all", action="store_true", help="W5: every submission and result")
    args = parser.parse_args(argv)
    from ray_bench_server import CountingServer

    with CountingServer() as server:
        os.environ.update(PREFRAY_API_URL=server.api_url, PREFRAY_HOME=server.home)
        run(args.workload, args.runs, args.all)


if __name__ == "__main__":
    sys.path[:0] = [str(Path(__file__).resolve().parent), str(REPO_ROOT)]
    main(sys.argv[1:])
