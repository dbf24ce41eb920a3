"""Helpers for the client tests: small real HTTP servers (uvicorn in a thread)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

Call = Callable[..., Any]  # call(method_name, *args, **kwargs) through one client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Flaky:
    """An ASGI app answering `status` to the first `failures` requests, then 200."""

    def __init__(self, failures: int, status: int, retry_after: str | None = None) -> None:
        self.failures, self.status, self.retry_after = failures, status, retry_after
        self.requests = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        self.requests += 1
        failing = self.requests <= self.failures
        headers = [(b"content-type", b"application/json")]
        if failing and self.retry_after is not None:
            headers.append((b"retry-after", self.retry_after.encode()))
        body = b'{"detail": "busy, try later"}' if failing else b'{"status": "ok"}'
        await send({"type": "http.response.start", "status": self.status if failing else 200,
                    "headers": headers})  # fmt: skip
        await send({"type": "http.response.body", "body": body})


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve an ASGI app on a free loopback port; yields its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()
