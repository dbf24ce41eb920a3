"""The worker: runs scheduled flow runs, each in its own process.

    prefray worker start [--limit N] [--poll-interval S]

Every poll it (1) reaps finished processes: a run whose process died before
the run reached a final state ends Crashed (or Cancelled, if cancellation was
asked for); (2) stops the processes of runs that are Cancelling and ends them
Cancelled; (3) claims due flow runs (Scheduled or Resuming, with an
entrypoint, their time come) by moving them to Pending (`claim`, which only one
worker can do for a run), and starts `python -m prefray.engine ID` for each, up to `--limit`
at once. Runs in AwaitingRetry are left alone: the process that runs a flow
retries it itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

from prefray.schemas import FlowRun, FlowRunSort, SetStateStatus
from prefray.states import Cancelled, Crashed, StateType, now

__all__ = ["Worker"]

# the names of Scheduled states a worker starts (AwaitingRetry belongs to its process)
_DUE_NAMES = ["Scheduled", "Resuming", "Late"]
_KILL_GRACE_SECONDS = 5.0


class Worker:
    """Polls the API and runs due flow runs in subprocesses (see the module doc)."""

    def __init__(
        self, client: Any, *, limit: int | None = None, poll_interval: float = 2.0
    ) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"--limit must be at least 1 (got {limit})")
        self.client = client
        self.limit = limit
        self.poll_interval = poll_interval
        self.processes: dict[uuid.UUID, subprocess.Popen[bytes]] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        """Poll until `stop()` (or SIGTERM/SIGINT in the main thread); then stop children."""
        with self._stop_on_signals():
            try:
                while not self.stopping.is_set():
                    self.poll_once()
                    self.stopping.wait(self.poll_interval)
            finally:
                self._stop_children()

    def stop(self) -> None:
        self.stopping.set()

    def poll_once(self) -> list[uuid.UUID]:
        """One round: reap, cancel, start; the ids of the runs started."""
        self.reap()
        self.cancel_requested()
        return self.start_due()

    # reap ----------------------------------------------------------------------------
    def reap(self) -> None:
        for run_id, process in list(self.processes.items()):
            code = process.poll()
            if code is None:
                continue
            del self.processes[run_id]
            self._conclude(run_id, code)

    def _conclude(self, run_id: uuid.UUID, code: int) -> None:
        state = self.client.read_flow_run(run_id).state
        if state is None:
            return
        if state.type == StateType.CANCELLING:
            self._propose(run_id, Cancelled(message="Cancelled: its process has stopped."))
            return
        # Scheduled (resumed after a suspension), Paused or final: the process left it so
        if state.type in (StateType.PENDING, StateType.RUNNING):
            message = f"The flow run's process exited with status {code} before the run finished."
            self._propose(run_id, Crashed(message=message))

    # cancel --------------------------------------------------------------------------
    def cancel_requested(self) -> None:
        if not self.processes:
            return
        cancelling = self.client.read_flow_runs(
            ids=list(self.processes), state_types=[StateType.CANCELLING]
        )
        for run in cancelling:
            process = self.processes.pop(run.id, None)
            if process is not None:
                _terminate(process)
            self._propose(run.id, Cancelled(message="Cancelled: the worker stopped its process."))

    # start ---------------------------------------------------------------------------
    def start_due(self) -> list[uuid.UUID]:
        free = None if self.limit is None else self.limit - len(self.processes)
        if free is not None and free <= 0:
            return []
        started = []
        for run in self._due_runs(free):
            if free is not None and len(started) >= free:
                break
            if self._claim(run):
                self.processes[run.id] = _spawn(run.id)
                started.append(run.id)
        return started

    def _due_runs(self, free: int | None) -> list[FlowRun]:
        runs = self.client.read_flow_runs(
            state_types=[StateType.SCHEDULED],
            state_names=_DUE_NAMES,
            sort=FlowRunSort.CREATED_ASC,
            limit=min(200, max(free or 50, 1) * 4),
        )
        current = now()
        # a run whose previous process has not been reaped yet waits for the next poll
        return [
            run
            for run in runs
            if run.entrypoint and run.id not in self.processes and _due(run, current)
        ]

    def _claim(self, run: FlowRun) -> bool:
        return self.client.claim_flow_run(run.id).status == SetStateStatus.ACCEPT

    # helpers -------------------------------------------------------------------------
    def _propose(self, run_id: uuid.UUID, state: Any) -> None:
        with contextlib.suppress(Exception):  # one bad run must not stop the worker
            self.client.set_flow_run_state(run_id, state)

    def _stop_children(self) -> None:
        for process in self.processes.values():
            _terminate(process)
        self.reap()
        for run_id in list(self.processes):  # killed and reaped above
            del self.processes[run_id]

    @contextlib.contextmanager
    def _stop_on_signals(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        for sig in previous:
            signal.signal(sig, lambda *_: self.stop())
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _due(run: FlowRun, current: Any) -> bool:
    assert run.state is not None
    when = run.state.state_details.scheduled_time
    return when is None or when <= current


def _spawn(run_id: uuid.UUID) -> subprocess.Popen[bytes]:
    # its own session: the run's process and whatever it starts are stopped together
    return subprocess.Popen(
        [sys.executable, "-m", "prefray.engine", str(run_id)],
        env=dict(os.environ),
        start_new_session=True,
    )


def _terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group (the engine reports as it goes), SIGKILL after a grace."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + _KILL_GRACE_SECONDS
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
