"""For `ray_bench.py`: the API server with a request counter, and the table.

The server is prefray's own app (`create_app`) on SQLite in a throw-away
`PREFRAY_HOME`, in a subprocess set up as `prefray server start` sets up its
process (`tune_gc`), behind a pure-ASGI counter of `/api/`
requests; `GET /_bench/requests` answers the count. Counting at the server
sees every request, from the driver and from every Ray worker.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx

COUNT_PATH = "/_bench/requests"


class CountingApp:
    """Counts `/api/` requests on the way to the wrapped ASGI app."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.count = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == COUNT_PATH:
            body = json.dumps({"requests": self.count}).encode()
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            self.count += 1
        await self.app(scope, receive, send)


class CountingServer:
    """The counting API in a subprocess for the duration of a `with` block."""

    def __init__(self) -> None:
        self.home = tempfile.mkdtemp(prefix="prefray-bench-")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> CountingServer:
        env = dict(os.environ, PREFRAY_HOME=self.home)
        env.pop("PREFRAY_API_URL", None)
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(self.port)], env=env, start_new_session=True
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.api_url}/health", timeout=1).raise_for_status()
                return self
            except httpx.HTTPError:
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError("the benchmark's API server did not start in 60 s")

    def count(self) -> int:
        answer = httpx.get(f"http://127.0.0.1:{self.port}{COUNT_PATH}", timeout=10)
        return int(answer.json()["requests"])

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def serve(port: int) -> None:
    import uvicorn

    from prefray.server.app import create_app
    from prefray.server.serve import tune_gc

    config = uvicorn.Config(
        CountingApp(create_app()), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    tune_gc()  # as `prefray server start` and the embedded API's process do
    server.run()


# ---------------------------------------------------------------- the table
def _fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _ratio(a: Any, b: Any) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def print_table(results: dict[tuple[str, int], dict[str, dict[str, Any]]]) -> None:
    rows = [("workload", "raw Ray", "prefray", "ratio", "goal", "API req/task run")]
    for (workload, n), sides in results.items():
        raw, pre = sides.get("raw", {}), sides.get("prefray", {})
        rows.extend(_rows(workload, n, raw, pre))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for (workload, n), sides in results.items():
        for side, out in sides.items():
            if "error" in out:
                print(f"\n{workload} n={n} {side} FAILED:\n{out['error']}")


def _per_run(pre: dict[str, Any], runs: int) -> str:
    requests = pre.get("api_requests")
    return "-" if requests is None or not runs else f"{requests / runs:.3f}"


def _rows(workload: str, n: int, raw: dict[str, Any], pre: dict[str, Any]) -> list[tuple]:
    if workload == "startup":
        raw_init, first = raw.get("init_s"), pre.get("first_result_s")
        extra = None if raw_init is None or first is None else first - raw_init
        return [
            (
                "startup: ray.init() / first result (s)",
                _fmt(raw_init),
                _fmt(first),
                f"+{_fmt(extra)} s",
                "< +1 s",
                _per_run(pre, 1),
            ),
            ("startup: raw first result (s)", _fmt(raw.get("first_result_s")), "", "", "", ""),
        ]
    if workload == "w1":
        recorded = pre.get("recorded")
        label = f"W1 map N={n} (s)" + ("" if recorded is None else f" [{recorded} recorded]")
        return [
            (
                label,
                _fmt(raw.get("wall_s")),
                _fmt(pre.get("wall_s")),
                _ratio(pre.get("wall_s"), raw.get("wall_s")),
                "<= 1.5x at 10k",
                _per_run(pre, n),
            )
        ]
    if workload == "w3":
        return [
            (
                "W3 64 x sleep 0.5 s (s)",
                _fmt(raw.get("wall_s")),
                _fmt(pre.get("wall_s")),
                _ratio(pre.get("wall_s"), raw.get("wall_s")),
                "<= 1.10x",
                _per_run(pre, W3_RUNS),
            )
        ]
    if workload == "w4":
        return [
            (
                "W4 50 MB -> 8 consumers (s)",
                _fmt(raw.get("wall_s")),
                _fmt(pre.get("wall_s")),
                _ratio(pre.get("wall_s"), raw.get("wall_s")),
                "<= 1.5x",
                _per_run(pre, W4_RUNS),
            ),
            (
                "W4 driver peak RSS (MB)",
                _fmt(raw.get("peak_rss_mb"), ".0f"),
                _fmt(pre.get("peak_rss_mb"), ".0f"),
                "",
                "",
                "",
            ),
            (
                "W4 driver RSS growth (MB)",
                _fmt(raw.get("rss_growth_mb"), ".0f"),
                _fmt(pre.get("rss_growth_mb"), ".0f"),
                _delta(raw, pre),
                "<= +50 MB",
                "",
            ),
        ]
    step_raw, step_pre = raw.get("step_ms"), pre.get("step_ms")
    return [
        (
            "W5 chain of 200: ms/step",
            _fmt(step_raw),
            _fmt(step_pre),
            _ratio(step_pre, step_raw),
            "<= 2x",
            _per_run(pre, W5_RUNS),
        )
    ]


W3_RUNS, W4_RUNS, W5_RUNS = 64, 9, 200


def _delta(raw: dict[str, Any], pre: dict[str, Any]) -> str:
    a, b = raw.get("rss_growth_mb"), pre.get("rss_growth_mb")
    return "-" if a is None or b is None else f"{b - a:+.0f} MB"


if __name__ == "__main__":
    serve(int(sys.argv[1]))
