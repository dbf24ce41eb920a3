"""Health and version."""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["API_VERSION", "router"]

API_VERSION = "0.1.0"
router = APIRouter(prefix="/api", tags=["meta"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Always answers, without a token: a load balancer's and a client's liveness probe."""
    return {"status": "ok"}


@router.get("/version")
async def version() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        server_version = package_version("prefray")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        server_version = "0+unknown"
    return {"api_version": API_VERSION, "server_version": server_version}
