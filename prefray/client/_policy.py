"""What to do with an answer (or a failure to get one): retry, raise, or read.

Pure decisions shared by the sync and async clients; no I/O here except the
clock. Every request prefray sends is safe to repeat (creates carry client
ids, transitions carry transition ids), so connection errors and the
"try again later" statuses are retried with exponential backoff and jitter.
"""

from __future__ import annotations

import random
from typing import Any

import httpx

from prefray.exceptions import (
    APIUnavailable,
    InvalidRequest,
    ObjectAlreadyExists,
    ObjectNotFound,
    PrefrayError,
    Unauthorized,
)

RETRY_STATUSES = frozenset({429, 502, 503, 504})
BACKOFF_BASE = 0.2  # seconds before the first retry; doubles each time
BACKOFF_CAP = 10.0  # no single wait is longer than this
RETRY_AFTER_CAP = 30.0  # a server's Retry-After is honoured up to this

Outcome = httpx.Response | httpx.TransportError


def retry_delay(outcome: Outcome, attempt: int, max_retries: int) -> float | None:
    """Seconds to wait before trying again, or None to stop and read `outcome`."""
    if attempt >= max_retries:
        return None
    if isinstance(outcome, httpx.Response):
        if outcome.status_code not in RETRY_STATUSES:
            return None
        hinted = _retry_after(outcome)
        if hinted is not None:
            return hinted
    backoff = min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)
    return backoff * random.uniform(0.5, 1.0)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(RETRY_AFTER_CAP, max(0.0, float(value))) if value else None
    except ValueError:  # an HTTP date: fall back to our own backoff
        return None


def conclude(outcome: Outcome, attempts: int, method: str, url: str) -> httpx.Response:
    """The successful response, or the prefray error that the outcome means."""
    if isinstance(outcome, httpx.TransportError):
        raise APIUnavailable(
            f"Could not reach the prefray API at {url} ({method}) after {attempts} "
            f"attempt(s): {type(outcome).__name__}: {outcome or 'no detail'}. Is the server "
            "running? Check PREFRAY_API_URL, or unset it to use the embedded server."
        ) from outcome
    if outcome.status_code < 400:
        return outcome
    raise _error_for(outcome, attempts, method, url)


def _error_for(response: httpx.Response, attempts: int, method: str, url: str) -> PrefrayError:
    status = response.status_code
    detail = _detail(response)
    if status == 404:
        return ObjectNotFound(detail)
    if status == 409:
        return ObjectAlreadyExists(detail)
    if status in (401, 403):
        hint = " Set PREFRAY_API_KEY to the server's key." if status == 401 else ""
        return Unauthorized(f"{detail}.{hint}" if hint else detail, status)
    if status in RETRY_STATUSES:
        return APIUnavailable(
            f"The prefray API at {url} still answered HTTP {status} to {method} after "
            f"{attempts} attempt(s): {detail}"
        )
    if status < 500:
        return InvalidRequest(detail, status)
    return PrefrayError(f"The prefray API at {url} failed on {method} with HTTP {status}: {detail}")


def _detail(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI's validation errors: name each field
        return "; ".join(_format_error(item) for item in detail)
    return str(detail)


def _format_error(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = ".".join(str(part) for part in item.get("loc", ()))
    return f"{where}: {item.get('msg', item)}" if where else str(item.get("msg", item))
