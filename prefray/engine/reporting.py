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

import atexit
import logging
import os
import threading
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Union

from prefray.exceptions import APIUnavailable
from prefray.logging import BatchShipper, api_client
from prefray.schemas import (
    OrchestrationResult,
    SetStateStatus,
    StateReport,
    TaskRun,
    TaskRunCreate,
)
from prefray.settings import Settings, get_current_settings
from prefray.states import State, StateDetails, StateType
from prefray.utilities.ids import uuid4
from prefray.utilities.models import copy_with

__all__ = ["CollectingReporter", "ReportItem", "StateReporter", "get_state_reporter"]

logger = logging.getLogger("prefray.engine.reporting")

if TYPE_CHECKING:
    from prefray.client import SyncPrefrayClient

ReportItem = Union[TaskRunCreate, StateReport]
# what the queue holds: a creation, a ready StateReport, or (task_run_id, state, force)
_Queued = Union[TaskRunCreate, StateReport, tuple]


class _Answers:
    """The server's latest non-ACCEPT answer per task run (pruned on ACCEPT)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[uuid.UUID, OrchestrationResult] = {}

    def record(self, reports: list[StateReport], results: list[OrchestrationResult | None]) -> None:
        """Reports' results; None is a report accepted as proposed."""
        with self._lock:
            for report, result in zip(reports, results, strict=False):
                if result is None or result.status == SetStateStatus.ACCEPT:
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

    def record_carried(self, creates: list[TaskRunCreate], runs: list[TaskRun | None]) -> None:
        """Creations that carried states: accepted when the server answers None (the
        run was created with all of them) or the stored run in the last one, else (the
        run existed: its states took the normal path) a REJECT with the state it is in."""
        with self._lock:
            for create, run in zip(creates, runs, strict=True):
                assert create.states and create.id is not None
                if run is None or (run.state is not None and run.state.id == create.states[-1].id):
                    self._latest.pop(create.id, None)
                    continue
                name = run.state.name if run.state is not None else "no state"
                self._latest[create.id] = OrchestrationResult(
                    status=SetStateStatus.REJECT,
                    state=run.state,
                    reason=f"the task run already existed and is {name}",
                )

    def get(self, task_run_id: uuid.UUID) -> OrchestrationResult | None:
        with self._lock:
            return self._latest.get(task_run_id)


def _with_transition_id(state: State) -> State:
    details = state.state_details
    if details.transition_id is None:
        # set once per queued item, so a retried batch is recognised as a replay
        if _PLAIN_DETAILS:  # what pydantic's setattr does for such a field
            details.__dict__["transition_id"] = uuid4()
            details.__pydantic_fields_set__.add("transition_id")
        else:
            details.transition_id = uuid4()
    return state


# StateDetails' fields are set as plain attributes (no validation, not frozen)
_PLAIN_DETAILS = not (
    StateDetails.model_config.get("validate_assignment") or StateDetails.model_config.get("frozen")
)


def _as_report(item: StateReport | tuple) -> StateReport:
    if isinstance(item, tuple):
        task_run_id, state, force = item
        return StateReport(task_run_id=task_run_id, state=_with_transition_id(state), force=force)
    _with_transition_id(item.state)
    return item


# what a state carried with its run's creation may be: the server accepts each of
# these as proposed over a new run that may_carry() admits (no rule applies), so
# the engine needs no answer for them; a terminal one ends the carrying
_CARRIED_TYPES = frozenset(
    {StateType.RUNNING, StateType.COMPLETED, StateType.FAILED, StateType.CRASHED}
)


def _may_carry(create: TaskRunCreate) -> bool:
    """Whether later states of this new run may travel inside its creation: nothing a
    rule looks at (cache key, tags that may have a concurrency limit, retries)."""
    initial = create.state
    return (
        create.id is not None
        and not create.states
        and (initial is None or initial.type == StateType.PENDING)
        and create.cache_key is None
        and not create.tags
        and create.empirical_policy.retries == 0
    )


def _may_ride(state: State, force: bool) -> bool:
    return not force and state.type in _CARRIED_TYPES and not state.state_details.cache_key


_RUNNING = StateType.RUNNING


def _coalesce(items: list[_Queued]) -> tuple[list[TaskRunCreate], list[StateReport], list[int]]:
    """Creations (those whose run's reports follow in this batch carrying them, in
    order, as `states`: one item for the server instead of 1 + n), the remaining
    reports in order, and the indexes of the creations that carry states."""
    creates: list[TaskRunCreate] = []
    reports: list[StateReport] = []
    # keyed by the run id's integer (hashed in C; a UUID's hash is a Python call)
    riding: dict[int, tuple[int, list[State]]] = {}
    rides: list[tuple[int, list[State]]] = []
    sent_alone: set[int] = set()  # runs with a report sent on its own: order
    for item in items:
        if isinstance(item, tuple):
            task_run_id, state, force = item
        elif isinstance(item, TaskRunCreate):
            if _may_carry(item) and item.id.int not in sent_alone:  # type: ignore[union-attr]
                ride = riding[item.id.int] = (len(creates), [])  # type: ignore[union-attr]
                rides.append(ride)
            creates.append(item)
            continue
        else:
            task_run_id, state, force = item.task_run_id, item.state, item.force
        _with_transition_id(state)
        key = task_run_id.int
        ride = riding.get(key)
        if ride is not None and _may_ride(state, force):
            ride[1].append(state)
            if state.type != _RUNNING:
                del riding[key]  # a state after a terminal one needs its answer
        else:
            if ride is not None:
                del riding[key]
            sent_alone.add(key)
            reports.append(_as_report(item))
    carrying = []
    for index, states in rides:
        if states:
            creates[index] = copy_with(creates[index], {"states": states})
            carrying.append(index)
    return creates, reports, carrying


def _send_items(
    settings: Settings, items: list[_Queued], answers: _Answers, max_retries: int | None = 2
) -> int:
    """Send creations (carrying the states that follow them in `items` where no rule
    can intervene), then the other reports, in order. Returns the number of requests."""
    with api_client(settings, max_retries) as client:
        return _ship(client, _coalesce(items), answers)


def _ship(
    client: SyncPrefrayClient,
    coalesced: tuple[list[TaskRunCreate], list[StateReport], list[int]],
    answers: _Answers,
) -> int:
    creates, reports, carrying = coalesced
    requests = 0
    if creates:
        # the server answers only the runs not created exactly as sent
        runs = client.create_task_runs(creates, answer="minimal")
        answers.record_carried([creates[i] for i in carrying], [runs[i] for i in carrying])
        requests += 1
    if reports:
        answers.record(reports, client.report_task_run_states(reports, answer="minimal"))
        requests += 1
    return requests


# queue items per request when a large batch is sent as a pipeline
_PIPELINE_ITEMS = 5_000


def _send_pipelined(settings: Settings, items: list[_Queued], answers: _Answers, chunk: int) -> int:
    """`_send_items` for a large batch: sent as consecutive parts of `chunk` items (each
    part's requests answered before the next part's go: the order is kept), while a
    helper thread coalesces the next parts, so the server is not kept waiting for
    that. A failure raises as `_send_items` would (the whole batch is sent again:
    creations carry ids and states transition ids, so what was sent is a replay)."""
    if len(items) <= chunk:
        return _send_items(settings, items, answers)
    requests = 0
    parts = []
    start = 0
    while start < len(items):
        end = min(start + chunk, len(items))
        # cut before a creation if one comes soon: a run's states stay with it
        soon = min(end + 100, len(items))
        while end < soon and not isinstance(items[end], TaskRunCreate):
            end += 1
        parts.append(items[start:end])
        start = end
    ahead = ThreadPoolExecutor(1, thread_name_prefix="prefray-report-coalesce")
    try:
        coalesced_parts: Iterable[Any] = ahead.map(_coalesce, parts)  # in order, ahead
    except RuntimeError:
        # the interpreter is exiting (the exit flush): no new threads, coalesce here
        coalesced_parts = map(_coalesce, parts)
    try:
        with api_client(settings) as client:
            for coalesced in coalesced_parts:
                requests += _ship(client, coalesced, answers)
    finally:
        ahead.shutdown(wait=True)
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
            # sent in parts of _PIPELINE_ITEMS, a few per batch: the server starts
            # on a part while the next one is coalesced
            max_request_items=30_000,
            exit_timeout=settings.log_flush_timeout * 2,
        )
        # creations held back until their run's first report (or a flush), so that
        # a mapped run's creation and its states travel as one item
        self._deferred: dict[uuid.UUID, tuple[TaskRunCreate, Settings]] = {}
        self._releasing = threading.Lock()  # see extend_collected
        atexit.register(self._release_deferred)  # runs before the shipper's exit flush

    def _send(self, settings: Settings, items: list[_Queued]) -> None:
        self.requests += _send_pipelined(settings, items, self._answers, _PIPELINE_ITEMS)

    def create_task_run(self, create: TaskRunCreate) -> None:
        """Queue a task run's creation (replayed safely: it carries its id)."""
        self._shipper.put(create, get_current_settings())

    def create_task_runs(self, creates: Iterable[TaskRunCreate], defer: bool = False) -> None:
        """Queue creations. With `defer`, each is held until its run's first
        report (then both ship together, as one item) or the next `flush()`:
        `.map()` uses it, so N mapped runs cost the API N items, not 3N."""
        settings = get_current_settings()
        if defer:
            self._deferred.update((create.id, (create, settings)) for create in creates)
            return
        self._shipper.put_many(list(creates), settings)

    def report(self, task_run_id: uuid.UUID, state: State, force: bool = False) -> None:
        """Queue a transition; no I/O here. Do not change `state` afterwards."""
        if self._deferred:
            self._release_one(task_run_id)
        self._shipper.put((task_run_id, state, force), get_current_settings())

    def extend(self, items: Iterable[ReportItem | tuple]) -> None:
        """Queue what a `CollectingReporter` drained (a worker's reports, as
        `StateReport`s or `(task_run_id, state, force)`), in order."""
        self.extend_collected(list(items), get_current_settings())

    def extend_collected(self, items: list[ReportItem | tuple], settings: Settings) -> None:
        """`extend` under `settings`, for the Ray runner's monitor: what several
        workers' `CollectingReporter`s collected, gathered in one wake-up (each
        run's items in order). Queued in one step, each held creation just before
        its run's first item."""
        if not self._deferred:
            self._shipper.put_many(items, settings)
            return
        # under the lock that `flush` takes first: a creation taken from the held
        # ones here is queued before a concurrent flush counts what it waits for
        with self._releasing:
            pairs: list[tuple[Settings, Any]] = []
            take = self._deferred.pop
            released = None  # the run whose held creation went last (its items follow)
            for item in items:
                if isinstance(item, tuple):
                    run_id = item[0]
                elif isinstance(item, StateReport):
                    run_id = item.task_run_id
                else:
                    run_id = None
                if run_id is not None and run_id is not released:  # one UUID per run
                    held = take(run_id, None)  # atomic: one caller gets it
                    if held is not None:
                        pairs.append((held[1], held[0]))
                    released = run_id
                pairs.append((settings, item))
            self._shipper.put_pairs(pairs)

    def _release_one(self, task_run_id: uuid.UUID) -> None:
        with self._releasing:
            held = self._deferred.pop(task_run_id, None)  # atomic: one caller gets it
            if held is not None:
                self._shipper.put(*held)

    def _release_deferred(self) -> None:
        with self._releasing:
            take = self._deferred.pop
            held = [take(task_run_id, None) for task_run_id in list(self._deferred)]
            self._shipper.put_pairs([(h[1], h[0]) for h in held if h is not None])

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything queued before the call (held creations
        included) is acknowledged by the server: True; False if `timeout`
        passed first. Raises `APIUnavailable` if sending them failed meanwhile
        (they stay queued for the next try)."""
        self._release_deferred()
        return self._shipper.flush(timeout, raise_on_failure=True)

    def close(self, timeout: float | None = None) -> bool:
        """Flush, bounded by `timeout` (default 2 x settings.log_flush_timeout)."""
        if timeout is None:
            timeout = get_current_settings().log_flush_timeout * 2
        self._release_deferred()
        try:
            return self._shipper.flush(timeout)
        except APIUnavailable:
            return False

    def pending(self) -> int:
        return self._shipper.pending() + len(self._deferred)

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
