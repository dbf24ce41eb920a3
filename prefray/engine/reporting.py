"""Batched task-run creations and state reports: the API off the critical path.

The engine hands every creation and every transition that needs no decision
from the server to a reporter, which costs the caller a queue append. On the
driver, `StateReporter`'s daemon thread sends them in batches (one
`create_task_runs` and one `report_task_run_states` request per batch, the
creations first, order kept). On a Ray worker, `CollectingReporter` holds them
for the driver to ship, or sends them itself when the engine needs a decision.

>>> reporter = get_state_reporter()
>>> reporter.create_task_run(TaskRunCreate(...))
>>> reporter.report(task_run_id, Running())
>>> reporter.flush()          # before a blocking decision: all of the above is on the server
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterable
from typing import Union

from prefray.exceptions import APIUnavailable
from prefray.logging import BatchShipper, api_client
from prefray.schemas import (
    OrchestrationResult,
    SetStateStatus,
    StateReport,
    TaskRunCreate,
)
from prefray.settings import Settings, get_current_settings
from prefray.states import State

__all__ = ["CollectingReporter", "ReportItem", "StateReporter", "get_state_reporter"]

logger = logging.getLogger("prefray.engine.reporting")

ReportItem = Union[TaskRunCreate, StateReport]
# what the queue holds: a creation, a ready StateReport, or (task_run_id, state, force)
_Queued = Union[TaskRunCreate, StateReport, tuple]


class _Answers:
    """The server's latest non-ACCEPT answer per task run (pruned on ACCEPT)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[uuid.UUID, OrchestrationResult] = {}

    def record(self, reports: list[StateReport], results: list[OrchestrationResult]) -> None:
        with self._lock:
            for report, result in zip(reports, results, strict=False):
                if result.status == SetStateStatus.ACCEPT:
                    self._latest.pop(report.task_run_id, None)
                    continue
                self._latest[report.task_run_id] = result
                logger.debug(
                    "task run %s: %s of %s (%s)",
                    report.task_run_id,
                    result.status.value,
                    report.state.name,
                    result.reason,
                )

    def get(self, task_run_id: uuid.UUID) -> OrchestrationResult | None:
        with self._lock:
            return self._latest.get(task_run_id)


def _as_report(item: StateReport | tuple) -> StateReport:
    if isinstance(item, tuple):
        task_run_id, state, force = item
        item = StateReport(task_run_id=task_run_id, state=state, force=force)
    details = item.state.state_details
    if details.transition_id is None:
        # set once per queued item, so a retried batch is recognised as a replay
        details.transition_id = uuid.uuid4()
    return item


def _send_items(
    settings: Settings, items: list[_Queued], answers: _Answers, max_retries: int | None = 2
) -> int:
    """Send creations, then reports, in order. Returns the number of requests made."""
    creates = [i for i in items if isinstance(i, TaskRunCreate)]
    reports = [_as_report(i) for i in items if not isinstance(i, TaskRunCreate)]
    requests = 0
    with api_client(settings, max_retries) as client:
        if creates:
            client.create_task_runs(creates)
            requests += 1
        if reports:
            answers.record(reports, client.report_task_run_states(reports))
            requests += 1
    return requests


class StateReporter:
    """The process's batching reporter (get it with `get_state_reporter()`)."""

    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or get_current_settings()
        self._answers = _Answers()
        self.requests = 0  # HTTP requests made so far (benchmarks and tests read it)
        self._shipper = BatchShipper(
            what="task run reports",
            send=self._send,
            interval=settings.state_batch_interval,
            batch_size=settings.state_batch_size,
            max_request_items=10_000,
            exit_timeout=settings.log_flush_timeout * 2,
        )

    def _send(self, settings: Settings, items: list[_Queued]) -> None:
        self.requests += _send_items(settings, items, self._answers)

    def create_task_run(self, create: TaskRunCreate) -> None:
        """Queue a task run's creation (replayed safely: it carries its id)."""
        self._shipper.put(create, get_current_settings())

    def create_task_runs(self, creates: Iterable[TaskRunCreate]) -> None:
        settings = get_current_settings()
        for create in creates:
            self._shipper.put(create, settings)

    def report(self, task_run_id: uuid.UUID, state: State, force: bool = False) -> None:
        """Queue a transition; no I/O here. Do not change `state` afterwards."""
        self._shipper.put((task_run_id, state, force), get_current_settings())

    def extend(self, items: Iterable[ReportItem]) -> None:
        """Queue what a `CollectingReporter` drained (a worker's reports), in order."""
        settings = get_current_settings()
        for item in items:
            self._shipper.put(item, settings)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything queued before the call is acknowledged by the
        server: True; False if `timeout` passed first. Raises `APIUnavailable`
        if sending them failed meanwhile (they stay queued for the next try)."""
        return self._shipper.flush(timeout, raise_on_failure=True)

    def close(self, timeout: float | None = None) -> bool:
        """Flush, bounded by `timeout` (default 2 x settings.log_flush_timeout)."""
        if timeout is None:
            timeout = get_current_settings().log_flush_timeout * 2
        try:
            return self._shipper.flush(timeout)
        except APIUnavailable:
            return False

    def pending(self) -> int:
        return self._shipper.pending()

    def last_result(self, task_run_id: uuid.UUID) -> OrchestrationResult | None:
        """The server's latest REJECT/WAIT/ABORT for a reported transition of the
        run, or None when its latest reported transition was accepted."""
        return self._answers.get(task_run_id)


class CollectingReporter:
    """Holds creations and reports for someone else to ship (a Ray worker's
    results travel back to the driver). `flush()` sends them itself."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[_Queued] = []
        self._answers = _Answers()

    def create_task_run(self, create: TaskRunCreate) -> None:
        self._items.append(create)

    def create_task_runs(self, creates: Iterable[TaskRunCreate]) -> None:
        self._items.extend(creates)

    def report(self, task_run_id: uuid.UUID, state: State, force: bool = False) -> None:
        self._items.append((task_run_id, state, force))

    def drain(self) -> list[ReportItem]:
        """Take what is held, as wire objects, in order."""
        with self._lock:
            items, self._items = self._items, []
        return [i if isinstance(i, TaskRunCreate) else _as_report(i) for i in items]

    def flush(self, timeout: float | None = None) -> bool:
        """Send what is held now through this process's client (the client's own
        timeout and retries bound it). On failure the items are kept and
        `APIUnavailable` is raised."""
        with self._lock:
            items, self._items = self._items, []
        if not items:
            return True
        try:
            # no background retry here: the client's full retries apply
            _send_items(get_current_settings(), items, self._answers, max_retries=None)
        except Exception:
            with self._lock:
                self._items[:0] = items
            raise
        return True

    def close(self, timeout: float | None = None) -> bool:
        return True  # what is held belongs to whoever drains it

    def pending(self) -> int:
        return len(self._items)

    def last_result(self, task_run_id: uuid.UUID) -> OrchestrationResult | None:
        return self._answers.get(task_run_id)


_reporter: StateReporter | None = None
_reporter_pid: int | None = None
_reporter_lock = threading.Lock()


def get_state_reporter() -> StateReporter:
    """This process's `StateReporter` (a forked child gets its own)."""
    global _reporter, _reporter_pid
    pid = os.getpid()
    if _reporter is None or _reporter_pid != pid:
        with _reporter_lock:
            if _reporter is None or _reporter_pid != pid:
                _reporter, _reporter_pid = StateReporter(), pid
    return _reporter
