"""Run loggers, the handler that ships their records to the API, and `log_prints`.

>>> @task
... def score(x):
...     get_run_logger().info("scoring %s", x)   # console + the API, with the run's ids

Records of the "prefray.flow_runs" / "prefray.task_runs" loggers carry the
run's ids; `APILogHandler` queues those and a daemon thread ships them in
batches (every `log_batch_interval`), so logging never waits on the API. The
same background shipping (`BatchShipper`) carries the engine's batched state
reports (`prefray.engine.reporting`).

Nothing is dropped silently: failed shipments are retried with backoff, and
what is finally lost (the API refused it, or it was still unreachable when the
process exited) is counted in one line on stderr.
"""

from __future__ import annotations

import atexit
import builtins
import collections
import contextlib
import contextvars
import datetime as dt
import io
import itertools
import logging
import operator
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prefray.exceptions import (
    APIUnavailable,
    InvalidRequest,
    MissingContextError,
    ObjectAlreadyExists,
    ObjectNotFound,
)
from prefray.schemas import MAX_LOG_MESSAGE_BYTES, LogCreate
from prefray.settings import Settings, get_current_settings, use_settings

if TYPE_CHECKING:
    from prefray.client import SyncPrefrayClient

__all__ = [
    "APILogHandler",
    "BatchShipper",
    "ConsoleHandler",
    "api_client",
    "ensure_logging_configured",
    "flush_logs",
    "get_run_logger",
    "patch_print",
]

# refusals: sending the same items again cannot succeed
_REFUSALS = (InvalidRequest, ObjectNotFound, ObjectAlreadyExists)
_BACKOFF_BASE, _BACKOFF_CAP = 0.5, 10.0
_shippers: weakref.WeakSet[BatchShipper] = weakref.WeakSet()


def _warn(message: str) -> None:
    with contextlib.suppress(Exception):
        sys.stderr.write(f"prefray: {message}\n")
        sys.stderr.flush()


@contextlib.contextmanager
def api_client(settings: Settings, max_retries: int | None = 2) -> Iterator[SyncPrefrayClient]:
    """The process's client for the API of `settings` (used from background threads).

    Background senders retry on their own, without end, so the client's own
    retries are capped: a failure surfaces (and is reported) within a second.
    """
    from prefray.client import get_client

    if max_retries is not None and settings.api_max_retries > max_retries:
        settings = settings.with_overrides(api_max_retries=max_retries)
    with use_settings(settings), get_client(sync_client=True) as client:
        yield client


def _describe_api(settings: Settings) -> str:
    return f"the API at {settings.api_url}" if settings.api_url else "the embedded API"


# background batch shipping ---------------------------------------------------
class BatchShipper:
    """A FIFO queue that a daemon thread empties in batches through `send`.

    `put` is O(1) and does no I/O. Items keep their order; each carries the
    settings it was made under (a worker may serve several snapshots), and a
    batch is split where the settings change. Per process: a forked child
    starts empty, with its own thread.
    """

    def __init__(
        self,
        *,
        what: str,
        send: Callable[[Settings, list[Any]], None],
        interval: float,
        batch_size: int,
        max_request_items: int = 10_000,
        exit_timeout: float = 5.0,
    ) -> None:
        self.what = what  # plural noun for messages: "log records"
        self._send = send
        self.interval = interval
        self.batch_size = max(1, batch_size)
        self.max_request_items = max(1, max_request_items)
        self.exit_timeout = exit_timeout
        self._atexit_pid: int | None = None
        self._reset()
        _shippers.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._wake = threading.Event()  # a batch is due
        self._kick = threading.Event()  # a flush wants a retry now
        self._queue: collections.deque[tuple[Settings, Any]] = collections.deque()
        self._enqueued = 0  # items ever put
        self._done = 0  # items ever sent or dropped, in order
        self._failures = 0  # failed send attempts
        self._streak = 0  # consecutive failed attempts
        self._last_error: str | None = None
        self._last_settings: Settings | None = None
        self._max_items = self.max_request_items
        self._thread: threading.Thread | None = None

    # the caller's side -------------------------------------------------------
    def put(self, item: Any, settings: Settings) -> None:
        self._extend(((settings, item),), 1)

    def put_many(self, items: list[Any], settings: Settings) -> None:
        """`put` of each item, in order, under one lock (what one wake-up of a
        producer gathered)."""
        if items:
            self._extend(zip(itertools.repeat(settings), items), len(items))

    def put_pairs(self, pairs: list[tuple[Settings, Any]]) -> None:
        """`put(item, settings)` of each `(settings, item)`, in order, under one lock."""
        if pairs:
            self._extend(pairs, len(pairs))

    def _extend(self, pairs: Iterable[tuple[Settings, Any]], count: int) -> None:
        with self._lock:
            self._queue.extend(pairs)
            self._enqueued += count
            due = len(self._queue) >= self.batch_size
        if self._thread is None:
            self._start()
        if due and not self._wake.is_set():  # set() takes the event's lock: once per batch
            self._wake.set()

    def pending(self) -> int:
        return len(self._queue)

    def flush(self, timeout: float | None, *, raise_on_failure: bool = False) -> bool:
        """Wait until everything put before the call is sent (True) or `timeout`
        passes (False). With `raise_on_failure`, a failed attempt to send them
        raises `APIUnavailable` instead of waiting on (they stay queued)."""
        if threading.current_thread() is self._thread:
            return False  # the sender itself logged something: never wait on ourselves
        with self._lock:
            target, failures = self._enqueued, self._failures
            if self._done >= target:
                return True
        if self._thread is None:
            self._start()
        self._wake.set()
        self._kick.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._done < target:
                if raise_on_failure and self._failures > failures:
                    raise APIUnavailable(
                        f"{len(self._queue)} {self.what} could not be sent: {self._last_error}"
                    )
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    # the sender's side ---------------------------------------------------------
    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name=f"prefray-{self.what.replace(' ', '-')}", daemon=True
            )
            if self._atexit_pid != os.getpid():
                self._atexit_pid = os.getpid()
                # atexit runs last-registered first: importing the embedded API
                # (which registers its shutdown on import) before registering our
                # flush makes the flush run while that API still serves.
                with contextlib.suppress(ImportError):
                    import prefray.client.embedded  # noqa: F401
                atexit.register(self._at_exit)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            self._kick.clear()
            try:
                self._ship_all()
            except Exception as exc:  # a bug here must not end the thread; items stay queued
                _warn(f"internal error while sending {self.what}: {exc!r}")

    def _ship_all(self) -> None:
        while True:
            with self._lock:
                batch = list(itertools.islice(self._queue, self._max_items))
            if not batch:
                return
            if not self._ship(batch):
                backoff = min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** min(self._streak, 10))
                self._kick.wait(backoff)
                self._kick.clear()

    def _ship(self, batch: list[tuple[Settings, Any]]) -> bool:
        """Send one batch group by group; False on a failure worth retrying."""
        for settings, items in _groups(batch):
            self._last_settings = settings
            try:
                self._send(settings, items)
            except _REFUSALS as exc:
                if getattr(exc, "status_code", None) == 413 and len(items) > 1:
                    self._max_items = max(1, len(items) // 2)  # too large: halve and retry
                    return True
                api = _describe_api(settings)
                _warn(f"dropped {len(items)} {self.what}: {api} refused them ({exc})")
            except Exception as exc:
                self._note_failure(exc, settings)
                return False
            self._note_done(len(items))
        return True

    def _note_done(self, count: int) -> None:
        recovered = self._streak > 0
        with self._lock:
            queue = self._queue
            if count >= len(queue):
                queue.clear()
            else:  # popleft `count` times, looped in C: the producers wait on this lock
                collections.deque(itertools.starmap(queue.popleft, itertools.repeat((), count)), 0)
            self._done += count
            self._streak = 0
            self._changed.notify_all()
        if recovered:
            api = _describe_api(self._last_settings)
            _warn(f"{api} is reachable again; sending the queued {self.what}")

    def _note_failure(self, exc: BaseException, settings: Settings) -> None:
        with self._lock:
            self._failures += 1
            self._streak += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            first = self._streak == 1
            count = len(self._queue)
            self._changed.notify_all()
        if first:
            _warn(
                f"could not send {count} {self.what} to {_describe_api(settings)} "
                f"({self._last_error}); retrying in the background"
            )

    def _at_exit(self) -> None:
        if os.getpid() != self._atexit_pid or not self._queue:
            return
        if self.flush(self.exit_timeout):
            return
        reason = self._last_error or f"no answer within {self.exit_timeout:g}s"
        where = _describe_api(self._last_settings) if self._last_settings else "the API"
        count = len(self._queue)
        _warn(
            f"{count} {self.what} were lost: could not send them to {where} before exit ({reason})"
        )


def _groups(batch: list[tuple[Settings, Any]]) -> Iterator[tuple[Settings, list[Any]]]:
    """Runs of consecutive items whose settings are equal (`is`, else `==`), in
    order, each with its settings."""
    for settings, pairs in itertools.groupby(batch, _first):
        yield settings, list(map(_second, pairs))


_first = operator.itemgetter(0)
_second = operator.itemgetter(1)


def _reset_after_fork() -> None:
    for shipper in list(_shippers):
        shipper._reset()


os.register_at_fork(after_in_child=_reset_after_fork)


# run loggers -------------------------------------------------------------------
class RunLoggerAdapter(logging.LoggerAdapter):
    """Adds the run's ids to each record; a call's own `extra` is merged in."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def get_run_logger(**extra: Any) -> RunLoggerAdapter:
    """The logger of the current task run (or flow run), whose records reach the API.

    Raises `MissingContextError` outside a flow or task run.
    """
    from prefray.context import FlowRunContext, TaskRunContext

    ensure_logging_configured()
    task_ctx = TaskRunContext.get()
    if task_ctx is not None:
        return RunLoggerAdapter(
            logging.getLogger("prefray.task_runs"), {**_task_extra(task_ctx), **extra}
        )
    flow_ctx = FlowRunContext.get()
    if flow_ctx is not None:
        return RunLoggerAdapter(
            logging.getLogger("prefray.flow_runs"), {**_flow_extra(flow_ctx), **extra}
        )
    raise MissingContextError(
        "There is no active flow or task run: get_run_logger() only works inside a "
        "@flow or @task. Elsewhere use logging.getLogger(...)."
    )


def _task_extra(ctx: Any) -> dict[str, Any]:
    task_run = ctx.task_run
    flow_run_id = ctx.flow_run_id or (task_run.flow_run_id if task_run else None)
    return {
        "task_run_id": str(task_run.id) if task_run else None,
        "flow_run_id": str(flow_run_id) if flow_run_id else None,
        "task_run_name": task_run.name if task_run else None,
        "task_name": getattr(ctx.task, "name", None),
        "flow_name": ctx.flow_name,
    }


def _flow_extra(ctx: Any) -> dict[str, Any]:
    flow_run = ctx.flow_run
    return {
        "flow_run_id": str(flow_run.id) if flow_run else None,
        "flow_run_name": flow_run.name if flow_run else None,
        "flow_name": flow_run.flow_name if flow_run else getattr(ctx.flow, "name", None),
    }


# handlers --------------------------------------------------------------------
class APILogHandler(logging.Handler):
    """Queues records that carry a run id; a background thread ships them."""

    def emit(self, record: logging.LogRecord) -> None:
        flow_run_id = getattr(record, "flow_run_id", None)
        task_run_id = getattr(record, "task_run_id", None)
        if flow_run_id is None and task_run_id is None:
            return
        settings = get_current_settings()
        if not settings.logging_to_api:
            return
        try:
            log = LogCreate(
                name=record.name,
                level=record.levelno,
                message=_bounded(self.format(record)),
                timestamp=dt.datetime.fromtimestamp(record.created, dt.timezone.utc),
                flow_run_id=flow_run_id,
                task_run_id=task_run_id,
            )
        except Exception:
            self.handleError(record)
            return
        _log_shipper().put(log, settings)


def _bounded(message: str) -> str:
    if len(message) * 4 <= MAX_LOG_MESSAGE_BYTES:  # fast path: cannot be too large
        return message
    data = message.encode("utf-8", "replace")
    if len(data) <= MAX_LOG_MESSAGE_BYTES:
        return message
    note = f"... [truncated {len(data) - MAX_LOG_MESSAGE_BYTES // 2} bytes]"
    return data[: MAX_LOG_MESSAGE_BYTES // 2].decode("utf-8", "ignore") + note


class ConsoleHandler(logging.StreamHandler):
    """Concise lines on stderr (looked up per record, so redirections apply)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(_ConsoleFormatter())

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s.%(msecs)03d | %(levelname)-7s | %(run_label)s - %(message)s", "%H:%M:%S"
        )

    def format(self, record: logging.LogRecord) -> str:
        task_run_name = getattr(record, "task_run_name", None)
        flow_run_name = getattr(record, "flow_run_name", None)
        if task_run_name:
            record.run_label = f"Task run {task_run_name!r}"
        elif flow_run_name:
            record.run_label = f"Flow run {flow_run_name!r}"
        else:
            record.run_label = record.name
        return super().format(record)


_configure_lock = threading.Lock()
_configured = False


def ensure_logging_configured() -> None:
    """Attach the console and API handlers to the "prefray" logger (once)."""
    global _configured
    if _configured:
        return
    with _configure_lock:
        if _configured:
            return
        level = get_current_settings().logging_level.upper()
        root = logging.getLogger("prefray")
        try:
            root.setLevel(level)
        except ValueError:
            raise ValueError(
                f"PREFRAY_LOGGING_LEVEL={level!r} is not a logging level; use DEBUG, INFO, "
                "WARNING, ERROR or CRITICAL"
            ) from None
        root.propagate = False  # our console handler prints; the root's would print twice
        root.addHandler(ConsoleHandler())
        root.addHandler(APILogHandler())
        _configured = True


_shipper_lock = threading.Lock()
_shipper: BatchShipper | None = None


def _send_logs(settings: Settings, logs: list[LogCreate]) -> None:
    with api_client(settings) as client:
        client.create_logs(logs)


def _log_shipper() -> BatchShipper:
    global _shipper
    if _shipper is None:
        with _shipper_lock:
            if _shipper is None:
                settings = get_current_settings()
                _shipper = BatchShipper(
                    what="log records",
                    send=_send_logs,
                    interval=settings.log_batch_interval,
                    batch_size=1000,
                    max_request_items=5000,
                    exit_timeout=settings.log_flush_timeout,
                )
    return _shipper


def flush_logs(timeout: float | None = None) -> bool:
    """Wait until the log records queued so far reach the API, at most `timeout`
    seconds (default `settings.log_flush_timeout`). Returns whether they did."""
    if _shipper is None:
        return True
    if timeout is None:
        timeout = get_current_settings().log_flush_timeout
    return _shipper.flush(timeout)


# log_prints ------------------------------------------------------------------
_print_logger: contextvars.ContextVar[logging.LoggerAdapter | None] = contextvars.ContextVar(
    "prefray_print_logger", default=None
)
_original_print = builtins.print
_print_lock = threading.Lock()
_print_users = 0


def _print_as_log(
    *args: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None, flush: bool = False
) -> None:
    logger = _print_logger.get()
    if logger is None or (file is not None and file is not sys.stdout):
        _original_print(*args, sep=sep, end=end, file=file, flush=flush)
        return
    buffer = io.StringIO()
    _original_print(*args, sep=sep, end=end, file=buffer)
    logger.info(buffer.getvalue().rstrip("\n"))


@contextlib.contextmanager
def patch_print(
    enabled: bool = True, logger: logging.LoggerAdapter | None = None
) -> Iterator[None]:
    """Within the block (this thread / task only), `print()` to stdout becomes an
    INFO record of the run logger; `print(..., file=...)` to other files is
    untouched. `enabled=False` turns it off for a nested run."""
    global _print_users
    target = (logger or get_run_logger()) if enabled else None
    with _print_lock:
        if _print_users == 0:
            builtins.print = _print_as_log
        _print_users += 1
    token = _print_logger.set(target)
    try:
        yield
    finally:
        _print_logger.reset(token)
        with _print_lock:
            _print_users -= 1
            if _print_users == 0 and builtins.print is _print_as_log:
                builtins.print = _original_print
