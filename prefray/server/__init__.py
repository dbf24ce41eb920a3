"""The orchestration API server: ASGI app, orchestration rules, storage.

Importing this package is cheap; `create_app`, `run_server` and `ServerThread`
are loaded on first use (see `prefray.server.app` and `prefray.server.serve`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServerThread", "create_app", "run_server"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from prefray.server.app import create_app

        return create_app
    if name in ("ServerThread", "run_server"):
        from prefray.server import serve

        return getattr(serve, name)
    raise AttributeError(f"module 'prefray.server' has no attribute {name!r}")
