"""Embedded mode: with no `PREFRAY_API_URL`, the driver runs the API itself.

The first client in a process calls `ensure_api(settings)`: it starts the API
on a free loopback port, on the SQLite database under `PREFRAY_HOME` (or
`settings.database_url`), then publishes the URL into the process settings
(`set_process_settings`) and `os.environ["PREFRAY_API_URL"]`, so settings
snapshots taken afterwards, and child processes such as Ray workers on this
machine, report to the same server. The server stops when the process exits.

Thread or subprocess? `benchmarks/embedded_mode.py` measures both (median of
3 fresh processes each, SQLite, shared 2-core machine, so startup is noisy):

                                        thread       subprocess
    startup, cold imports (s, 3 runs)   0.8/1.8/2.8  0.9/1.0/1.6
    health p50 ms, idle driver          0.69         0.79
    create_flow_run p50 ms, idle        4.7          7.3
    10,000 task runs created / s        3,705        3,772
    state reports / s (batches of 1000) 2,152        3,718
    health p50/p95 ms, busy driver      25/118       22/77
    create_flow_run p50/p95, busy       301/998 ms   44/128 ms

The default is the subprocess. Startup is a wash (the child's imports run in
parallel with the driver's), idle latency is within a millisecond, but a
thread shares the driver's GIL: while tasks run Python code on the driver (a
`ConcurrentTaskRunner`, or the engine itself under a large `.map()`), every
request the server handles waits for the GIL, and a write round trip gets 7x
slower at the median and 8x at p95; batched state reports also go 1.7x faster
on the server's own core. `mode="thread"` stays available where nothing else
runs in the process: the CLI and `prefray_test_harness` use it.

(Both modes bind the listening socket with `IPPROTO_TCP`: asyncio only sets
TCP_NODELAY on sockets whose protocol says TCP, and without it every response
waited ~40 ms on delayed ACKs.)

The listening socket is bound here, before the server starts, so the port is
never raced for; the subprocess inherits it as a file descriptor and exits when
its stdin (a pipe held by this process) closes, so it dies with its driver
even on SIGKILL. Two drivers started at once with no URL each run their own
server on the same SQLite file (the server's job to make that safe).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Literal, Protocol

import httpx

from prefray.exceptions import ConfigurationError
from prefray.settings import Settings, set_process_settings

__all__ = [
    "DEFAULT_MODE",
    "EmbeddedAPI",
    "ensure_api",
    "running_api",
    "start_api",
    "stop_all",
]

Mode = Literal["thread", "subprocess"]
DEFAULT_MODE: Mode = "subprocess"
STARTUP_TIMEOUT = 60.0  # seconds; a cold import plus migrations on a busy machine


class EmbeddedAPI(Protocol):
    url: str
    mode: Mode

    def alive(self) -> bool: ...

    def stop(self) -> None: ...


def _bind_loopback(port: int = 0) -> socket.socket:
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto
    # says TCP, and without it every response waits ~40 ms on delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    return sock


def _url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


class ThreadAPI:
    """The server's `ServerThread`: uvicorn on its own loop in a daemon thread."""

    mode: Mode = "thread"

    def __init__(self, settings: Settings, port: int = 0) -> None:
        from prefray.server.serve import ServerThread

        self._server = ServerThread(settings, port=port).start()
        self.url = self._server.url

    def alive(self) -> bool:
        return self._server.alive()

    def stop(self) -> None:
        self._server.stop()


class SubprocessAPI:
    """`python -m prefray.client._embedded_child` serving an inherited socket."""

    mode: Mode = "subprocess"

    def __init__(self, settings: Settings, port: int = 0) -> None:
        sock = _bind_loopback(port)
        self.url = _url_of(sock)
        self._stderr = tempfile.TemporaryFile()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "prefray.client._embedded_child", str(sock.fileno())],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr,
                pass_fds=[sock.fileno()], env=_child_env(), start_new_session=True,
            )  # fmt: skip
        finally:
            sock.close()  # the child holds its own copy
        assert self._process.stdin is not None
        self._process.stdin.write(_settings_line(settings))
        self._process.stdin.flush()

    def alive(self) -> bool:
        return self._process.poll() is None

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            assert self._process.stdin is not None
            self._process.stdin.close()  # the child's cue to shut down
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=5)
        self._stderr.close()

    def error_output(self) -> str:
        if self._stderr.closed:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-3000:]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PREFRAY_API_URL", None)
    return env


def _settings_line(settings: Settings) -> bytes:
    data = settings.model_dump(mode="json")
    if settings.api_key is not None:
        data["api_key"] = settings.api_key.get_secret_value()
    return json.dumps(data).encode() + b"\n"


def start_api(settings: Settings, mode: Mode = DEFAULT_MODE, port: int = 0) -> EmbeddedAPI:
    """Start an API for `settings` on loopback (`port=0`: a free one) and wait
    until it answers its health check."""
    settings.home.mkdir(parents=True, exist_ok=True)
    kind = ThreadAPI if mode == "thread" else SubprocessAPI
    server: EmbeddedAPI = kind(settings, port)
    try:
        _wait_healthy(server, settings)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_healthy(server: EmbeddedAPI, settings: Settings) -> None:
    headers = {}
    if settings.api_key is not None:
        headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with httpx.Client(base_url=server.url, trust_env=False, headers=headers) as http:
        while time.monotonic() < deadline:
            if not server.alive():
                raise ConfigurationError(_startup_failure(server, "exited during startup"))
            with contextlib.suppress(httpx.HTTPError):
                if http.get("/api/health", timeout=STARTUP_TIMEOUT).status_code == 200:
                    return
            time.sleep(0.02)
    raise ConfigurationError(_startup_failure(server, f"was not up after {STARTUP_TIMEOUT:.0f}s"))


def _startup_failure(server: EmbeddedAPI, what: str) -> str:
    output = server.error_output() if isinstance(server, SubprocessAPI) else ""
    return (
        f"The embedded prefray API ({server.mode}) {what}. "
        "Set PREFRAY_API_URL to a running server (`prefray server start`) or check "
        f"PREFRAY_HOME / PREFRAY_API_DATABASE_URL.{chr(10) + output if output else ''}"
    )


_lock = threading.Lock()
_servers: dict[str, EmbeddedAPI] = {}  # by database URL


def ensure_api(settings: Settings, mode: Mode = DEFAULT_MODE) -> str:
    """The URL of this process's embedded API for `settings`' database, started
    on first use and published for snapshots and child processes."""
    with _lock:
        server = _servers.get(settings.database_url)
        if server is None or not server.alive():
            server = _servers[settings.database_url] = start_api(settings, mode)
    publish(settings, server.url)
    return server.url


def publish(settings: Settings, url: str) -> None:
    """Make `url` the API of this process and of the processes it starts."""
    set_process_settings(settings.with_overrides(api_url=url))
    os.environ["PREFRAY_API_URL"] = url


def running_api(settings: Settings) -> EmbeddedAPI | None:
    """The embedded API serving `settings`' database in this process, if any."""
    return _servers.get(settings.database_url)


def stop_api(settings: Settings) -> None:
    """Stop the embedded API serving `settings`' database (the test harness's exit)."""
    with _lock:
        server = _servers.pop(settings.database_url, None)
    if server is not None:
        server.stop()


def stop_all() -> None:
    """Stop every embedded API of this process (registered to run at exit)."""
    with _lock:
        servers = list(_servers.values())
        _servers.clear()
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


atexit.register(stop_all)
