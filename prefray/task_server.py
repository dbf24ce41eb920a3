"""Task servers: run the autonomous task runs queued by `.submit()`/`.map()`.

    # tasks.py
    @task
    def double(x: int) -> int:
        return 2 * x

    # anywhere, outside a flow: queued, Scheduled, parameters in result storage
    future = double.submit(21)

    # the server (or: prefray task-server serve tasks:double)
    from prefray.task_server import serve
    serve(double, task_runner=ConcurrentTaskRunner())

A server claims queued runs of its tasks from the API (an atomic claim: each
run goes to one server, however many run), holds a lease on each while it
runs, renewing it every third of `lease_seconds`, and executes the runs on
its task runner. A server that dies stops renewing: when a lease expires the
next claim re-queues the run (named `Requeued`) for another server. Results
are persisted (a submitter reads them from result storage).

Runs are matched to tasks by task key (the function's module and qualified
name): define tasks in an importable module, not in a script run as
`__main__`, so that the submitter and the server agree on it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prefray.engine.call import TaskRunCall
from prefray.schemas import ClaimedTaskRun
from prefray.settings import Settings, get_current_settings, use_settings
from prefray.states import Failed

if TYPE_CHECKING:
    from prefray.futures import PrefrayFuture
    from prefray.tasks import Task

__all__ = ["TaskServer", "serve"]

logger = logging.getLogger("prefray.task_server")


class TaskServer:
    """Claims and runs queued runs of `tasks` until `stop()` (see the module docstring).

    `limit`: runs in flight at once; `lease_seconds`: how long a claimed run
    stays this server's without a renewal; `poll_interval`: seconds between
    claims when the queue is empty.
    """

    def __init__(
        self,
        *tasks: Task,
        task_runner: Any = None,
        limit: int = 10,
        lease_seconds: float = 30.0,
        poll_interval: float = 0.5,
        name: str | None = None,
    ) -> None:
        if not tasks:
            raise ValueError("a task server needs at least one task to serve")
        if limit < 1 or lease_seconds <= 0 or poll_interval <= 0:
            raise ValueError(
                f"limit must be >= 1 and lease_seconds, poll_interval > 0; got limit={limit}, "
                f"lease_seconds={lease_seconds}, poll_interval={poll_interval}"
            )
        self.tasks = {t.task_key: t for t in tasks}
        self.task_runner = task_runner
        self.limit = limit
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        # the settings in force where the server is built: run() may be called on
        # another thread, which does not see this thread's use_settings()
        self._settings = get_current_settings()
        self._stop = threading.Event()
        self._in_flight: dict[uuid.UUID, PrefrayFuture] = {}
        self._lock = threading.Lock()

    def stop(self) -> None:
        """Claim nothing more; `run()` returns once the runs in flight finish."""
        self._stop.set()

    def run(self) -> None:
        """Serve until `stop()` (or KeyboardInterrupt / SIGTERM in `serve`)."""
        from prefray.engine.calls import _settings_with_api

        with use_settings(self._settings):
            settings = _settings_with_api().with_overrides(persist_results=True)
        runner = self.task_runner or _default_runner()
        with use_settings(settings), runner.start():
            renewer = threading.Thread(
                target=self._renew_loop, args=(settings,), name="prefray-lease", daemon=True
            )
            renewer.start()
            try:
                self._serve(settings, runner)
            finally:
                self._drain(settings)
                self._stop.set()
                renewer.join(timeout=5)

    # the loop -------------------------------------------------------------------
    def _serve(self, settings: Settings, runner: Any) -> None:
        from prefray.client import SyncPrefrayClient

        logger.info("Task server %s serving %s", self.name, sorted(self.tasks))
        with SyncPrefrayClient(settings=settings) as client:
            while not self._stop.is_set():
                finished = self._reap(settings)
                capacity = self.limit - len(self._in_flight)
                claimed: list[ClaimedTaskRun] = []
                if capacity > 0:
                    claimed = self._claim(client, capacity)
                    limited = _limited_tags(claimed, settings)
                    for item in claimed:
                        self._start(item, settings, runner, limited)
                if not claimed and not finished:
                    self._stop.wait(self.poll_interval if capacity > 0 else 0.05)

    def _claim(self, client: Any, capacity: int) -> list[ClaimedTaskRun]:
        from prefray.exceptions import APIUnavailable

        try:
            return client.claim_task_runs(list(self.tasks), self.name, capacity, self.lease_seconds)
        except APIUnavailable:  # already retried with backoff; keep serving
            logger.warning("The API is unavailable; claiming again shortly", exc_info=True)
            return []

    def _start(
        self,
        item: ClaimedTaskRun,
        settings: Settings,
        runner: Any,
        limited: frozenset[str] | None,
    ) -> None:
        run = item.task_run
        task = self.tasks[run.task_key]
        try:
            parameters = _load_parameters(item)
        except Exception as exc:  # the run cannot start: say why, on the run
            self._fail_unloadable(run, exc, settings)
            return
        call = TaskRunCall(task=task, task_run=run, parameters=parameters, settings=settings)
        call.flush_logs = True
        call.limited_tags = limited
        with self._lock:
            self._in_flight[run.id] = runner.submit(call)

    def _reap(self, settings: Settings) -> list[uuid.UUID]:
        """Release the leases of finished runs, after their states are on the server."""
        with self._lock:
            done = [i for i, f in self._in_flight.items() if f.wait_state(0) is not None]
        if done:
            _flush_reports(settings)
            _release(settings, self.name, done)
            with self._lock:
                for run_id in done:
                    self._in_flight.pop(run_id, None)
        return done

    def _drain(self, settings: Settings) -> None:
        with self._lock:
            futures = list(self._in_flight.values())
        for future in futures:
            future.wait_state()
        self._reap(settings)

    def _renew_loop(self, settings: Settings) -> None:
        from prefray.client import SyncPrefrayClient

        interval = self.lease_seconds / 3
        with SyncPrefrayClient(settings=settings) as client:
            while not self._stop.wait(interval):
                with self._lock:
                    ids = list(self._in_flight)
                if not ids:
                    continue
                try:
                    held = set(client.renew_task_run_leases(ids, self.name, self.lease_seconds))
                except Exception:  # the API is briefly away: try again next round
                    logger.warning("Could not renew leases; retrying", exc_info=True)
                    continue
                for lost in set(ids) - held:
                    logger.warning("Lost the lease on task run %s (it was re-queued)", lost)

    def _fail_unloadable(self, run: Any, exc: Exception, settings: Settings) -> None:
        from prefray.client import SyncPrefrayClient

        state = Failed(message=f"Could not load the parameters of this task run: {exc}")
        state.state_details.retriable = False
        with SyncPrefrayClient(settings=settings) as client:
            client.set_task_run_state(run.id, state)
        _release(settings, self.name, [run.id])


def serve(
    *tasks: Task,
    task_runner: Any = None,
    limit: int = 10,
    lease_seconds: float = 30.0,
    poll_interval: float = 0.5,
) -> None:
    """Run a task server for `tasks` in this process until interrupted (Ctrl-C, SIGTERM).

    `task_runner` is where the runs execute (default `ConcurrentTaskRunner`;
    `RayTaskRunner()` spreads them over a Ray cluster).
    """
    import signal

    server = TaskServer(
        *tasks,
        task_runner=task_runner,
        limit=limit,
        lease_seconds=lease_seconds,
        poll_interval=poll_interval,
    )
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: server.stop())
    try:
        server.run()
    except KeyboardInterrupt:
        server.stop()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _default_runner() -> Any:
    from task_runners import ConcurrentTaskRunner

    return ConcurrentTaskRunner()


def _limited_tags(claimed: list[ClaimedTaskRun], settings: Settings) -> frozenset[str] | None:
    """Fresh for each claim that brought tagged runs: a limit set a moment ago applies."""
    if not any(item.task_run.tags for item in claimed):
        return None
    from prefray.engine.concurrency import fetch_limited_tags

    return fetch_limited_tags(settings)


def _load_parameters(item: ClaimedTaskRun) -> dict[str, Any]:
    from prefray.results import load_result

    if item.parameters is None:
        return {}
    parameters = load_result(item.parameters)
    if not isinstance(parameters, dict):
        raise TypeError(f"expected a dict of parameters, found {type(parameters).__name__}")
    return parameters


def _flush_reports(settings: Settings) -> None:
    from prefray.engine.reporting import get_state_reporter

    get_state_reporter().flush(settings.api_request_timeout)


def _release(settings: Settings, worker: str, run_ids: Sequence[uuid.UUID]) -> None:
    from prefray.client import SyncPrefrayClient

    try:
        with SyncPrefrayClient(settings=settings) as client:
            client.release_task_run_leases(list(run_ids), worker)
    except Exception:  # the lease then simply expires
        logger.warning("Could not release leases of %s", list(run_ids), exc_info=True)
