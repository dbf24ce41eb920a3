"""The ASGI app factory: `create_app(settings) -> FastAPI`.

    from prefray.server.app import create_app
    app = create_app(Settings(home=tmp_path))          # SQLite at tmp_path/prefray.db
    # uvicorn.run(app) / httpx.ASGITransport(app) / ServerThread(settings)

The schema is migrated when the app starts (its lifespan), so an app must be
started before it serves: uvicorn does this; in-process tests use
`async with app.router.lifespan_context(app)` or `prefray.server.serve.ServerThread`.

Error answers are JSON `{"detail": "<message>"}`: 401 for a missing/wrong token,
404 for unknown ids, 409 for a conflicting write, 413 for an oversize body, 422
for a body that does not validate (the message names the field), 503 while the
database is busy. A client can never cause a 500.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc

from prefray.exceptions import ObjectNotFound
from prefray.server.api import (
    concurrency_limits,
    deployments,
    flow_runs,
    logs,
    meta,
    task_queue,
    task_runs,
)
from prefray.server.api.meta import API_VERSION
from prefray.server.database import Database, migrate
from prefray.server.middleware import BearerAuth, BodyGuard
from prefray.settings import Settings, get_current_settings

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "create_app"]

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
_log = logging.getLogger("prefray.server")


def create_app(
    settings: Settings | None = None, *, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
) -> FastAPI:
    """Build the orchestration API for `settings` (default: the current settings).

    The database is `settings.database_url` (SQLite under `settings.home`
    unless `api_database_url` is set); `settings.api_key`, when set, is
    required as a bearer token on every request but `GET /api/health`.
    """
    settings = settings or get_current_settings()
    db = Database(settings.database_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await migrate(db)
        try:
            yield
        finally:
            await db.dispose()

    app = FastAPI(
        title="prefray orchestration API",
        version=API_VERSION,
        lifespan=lifespan,
        description="Records flow runs, task runs, their states and logs.",
    )
    app.state.db = db
    app.state.settings = settings
    for module in (meta, flow_runs, task_runs, logs):
        app.include_router(module.router)
    app.include_router(deployments.router)
    app.include_router(deployments.flow_run_updates)
    app.include_router(concurrency_limits.router)
    app.include_router(task_queue.router)
    _install_error_handlers(app)
    # added last = outermost: auth is checked before any body is read
    app.add_middleware(BodyGuard, max_bytes=max_request_bytes)
    if settings.api_key is not None and settings.api_key.get_secret_value():
        app.add_middleware(BearerAuth, api_key=settings.api_key.get_secret_value())
    return app


def _install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ObjectNotFound, _not_found)
    app.add_exception_handler(sa_exc.IntegrityError, _conflict)
    app.add_exception_handler(sa_exc.DataError, _unstorable)
    app.add_exception_handler(sa_exc.StatementError, _statement_error)
    app.add_exception_handler(UnicodeError, _bad_text)
    app.add_exception_handler(OverflowError, _too_large_number)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _jsonable_errors(exc.errors())
    return JSONResponse(
        status_code=422, content={"detail": _describe(exc.errors()), "errors": errors}
    )


def _describe(errors: Sequence[Any]) -> str:
    parts = []
    for error in errors[:5]:
        where = ".".join(str(p) for p in error.get("loc", ())) or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "invalid request: " + "; ".join(parts) + more


def _jsonable_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    # `input`/`ctx` may hold arbitrary (even unencodable) client values: keep it to
    # where and what
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg")), "type": e.get("type")}
        for e in errors[:100]
    ]


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": str(exc)})


async def _conflict(request: Request, exc: Exception) -> JSONResponse:
    _log.info("write conflict on %s: %s", request.url.path, exc)
    return JSONResponse(
        status_code=409,
        content={"detail": "the request conflicts with stored data (a duplicate or missing "
                 "reference); read the current object and retry"},
    )  # fmt: skip


async def _unstorable(request: Request, exc: Exception) -> JSONResponse:
    reason = getattr(exc, "orig", exc)
    return JSONResponse(
        status_code=422,
        content={"detail": f"the database cannot store a value in this request: {reason}"},
    )


async def _statement_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, sa_exc.StatementError)
    orig = exc.orig
    if isinstance(orig, ValueError | TypeError | ArithmeticError):
        # raised while binding parameters: a value from the request, e.g. NaN in JSON
        return JSONResponse(
            status_code=422,
            content={"detail": f"a value in this request cannot be stored: {orig}"},
        )
    sqlstate = str(getattr(getattr(orig, "driver_exception", orig), "sqlstate", "") or "")
    if sqlstate.startswith("22"):  # PostgreSQL "data exception": a value it cannot store
        return await _unstorable(request, exc)
    if sqlstate in ("40001", "40P01") or (
        isinstance(exc, sa_exc.OperationalError) and "locked" in str(orig)
    ):
        return JSONResponse(
            status_code=503,
            headers={"Retry-After": "1"},
            content={"detail": "the database is busy; retry shortly"},
        )
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        # a pooled connection the database dropped (a restart, a network cut): the
        # pool replaces it; the client's retry (creations and reports are replay-safe)
        # gets a fresh one
        return JSONResponse(
            status_code=503,
            headers={"Retry-After": "1"},
            content={"detail": "the database connection was lost; retry shortly"},
        )
    raise exc


async def _bad_text(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        status_code=422,
        content={"detail": f"text in this request is not valid Unicode: {exc}"},
    )


async def _too_large_number(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        status_code=422,
        content={"detail": f"a number in this request is out of the storable range: {exc}"},
    )
