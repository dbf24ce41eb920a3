"""The driver's monitor: one thread that turns Ray outcomes into final states.

The monitor thread watches the state refs of every live attempt with one
`ray.wait` over the batch and fetches the results of all that are ready with
one `ray.get` per wake-up (a per-ref `ObjectRef.future()` callback cost the
driver a Ray callback and a thread hop per task run). For each outcome:

- a result: ships the worker's collected transitions through the driver's
  batched reporter, and sets the future's final state (the value stays in the
  object store);
- a Ray error (worker died, node died, object lost, out of memory): if an
  upstream the attempt consumed was itself lost, the attempt never ran: it is
  sent again once those upstreams are final. Otherwise the task run crashed:
  the driver proposes `Crashed` with Ray's error text; the server answers with
  a retry (AwaitingRetry) while the task's `retries` allow, and the attempt is
  re-submitted at the scheduled time; else the run ends Crashed;
- a cancellation by `cancel_all`: the run ends Cancelled.

Every plan ends with `future.set_final(...)`, whatever happens here, so a flow
never waits forever on a run the monitor gave up on.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from typing import Any

from prefray.settings import use_settings
from prefray.states import Cancelled, Crashed, Failed, State
from task_runners.ray.deadline import is_hard_timeout
from task_runners.ray.errors import describe, is_dependency_failure, user_facing_error
from task_runners.ray.futures import RayState
from task_runners.ray.payload import decode_result
from task_runners.ray.submission import Attempt, Plan, Submitter

__all__ = ["Monitor"]

logger = logging.getLogger("prefray.task_runners.ray")

# the longest a watching monitor waits before looking at its queue (new
# attempts, cancellations): bounds the extra latency of a run submitted while
# others are still running
POLL_SECONDS = 0.01
# when many runs are watched, a `ray.wait` looks at the oldest (at least HEAD,
# twice as many as the last wake-up saw end, at most WINDOW) and at the next
# WINDOW of the rest in turn (see `_refs_to_wait_on`)
WINDOW = 256
HEAD = 64
MANY = 512  # watched runs from which wake-ups are paced (big maps)
PACE_SECONDS = 0.02  # pause between wake-ups while more than MANY are watched
# pause after a wake-up that settled runs while others are still watched: their
# outcomes gather for the next one instead of costing a wake-up each, and the
# CPU goes to the workers meanwhile (a chain of 200 quick dependent runs: ~15 %
# faster on 2 cores); a run that ends meanwhile is seen at most this much later
SETTLE_PAUSE_SECONDS = 0.005


class Monitor:
    def __init__(self, submitter: Submitter) -> None:
        self.submitter = submitter
        self._events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._outstanding: dict[int, Attempt] = {}  # id(plan) -> its live attempt
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._timers: list[tuple[float, int, Plan, int]] = []
        self._tick = itertools.count()
        self._watched: dict[Any, Attempt] = {}  # state ref -> attempt (monitor thread only)
        self._sweep = 0  # where the next look beyond the oldest watched refs starts
        self._ended = 0  # runs the last wake-up saw end
        self._cancelling = False
        self._thread = threading.Thread(target=self._run, name="prefray-ray-monitor", daemon=True)
        self._thread.start()

    # called from the flow's thread ---------------------------------------------------
    def start(self, plan: Plan) -> None:
        self._launch(plan, 1)

    def cancel_all(self) -> None:
        """Cancel every outstanding Ray task; their runs end Cancelled."""
        import ray

        with self._lock:
            self._cancelling = True
            attempts = list(self._outstanding.values())
        for attempt in attempts:
            attempt.cancelled = True
            try:
                ray.cancel(attempt.state_ref, force=True)
            except Exception as exc:  # already finished, or the connection is gone
                logger.debug("could not cancel %s: %s", attempt.plan.call.task_run.name, exc)
        self._events.put(("cancel_timers",))

    def close(self, timeout: float) -> None:
        """Wait (bounded) for outstanding runs, then stop; what is left ends Cancelled."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._outstanding and time.monotonic() < deadline:
                self._idle.wait(max(0.0, deadline - time.monotonic()))
            leftover = list(self._outstanding.values())
        if leftover:
            self.cancel_all()
            for attempt in leftover:
                self._events.put(("abandon", attempt))
        self._events.put(("stop",))
        self._thread.join(timeout=30)

    # the monitor thread ------------------------------------------------------------
    def _run(self) -> None:
        while True:
            event = self._next_event()
            if event is not None:
                if event[0] == "stop":
                    return
                self._guarded(event)
            elif self._watched:
                self._poll()

    def _guarded(self, event: tuple[Any, ...]) -> None:
        try:
            self._handle(event)
        except Exception as exc:  # a bug here must not leave a flow waiting forever
            logger.exception("internal error in the Ray runner's monitor")
            for item in event[1:]:
                if isinstance(item, Attempt):
                    self._settle(item, Crashed(message=f"prefray's Ray runner failed: {exc!r}"))

    def _next_event(self) -> tuple[Any, ...] | None:
        """A due timer or a queued event; blocks only while nothing is watched
        (then `_poll` does the waiting)."""
        timeout = None
        if self._timers:
            due, _, plan, number = self._timers[0]
            timeout = due - time.monotonic()
            if timeout <= 0:
                heapq.heappop(self._timers)
                return ("launch", plan, number)
        try:
            if self._watched:
                return self._events.get_nowait()
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    def _poll(self) -> None:
        """Wait briefly for any watched attempt to end, then handle all that have."""
        import ray

        refs = self._refs_to_wait_on()
        ready: list[Any] = []
        if len(self._watched) > MANY:
            # a big fan-out, paced: after a pause something is over most of the
            # time, so one look collects it (a `ray.wait` costs ~0.15 µs a ref)
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        if not ready:
            timeout = POLL_SECONDS
            if self._timers:
                timeout = max(0.0, min(timeout, self._timers[0][0] - time.monotonic()))
            ready, _ = ray.wait(refs, num_returns=1, timeout=timeout, fetch_local=False)
            if not ready:
                return
            if len(refs) > 1:  # everything else that is over by now, in the same wake-up
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        self._ended = len(ready)
        attempts = [self._watched.pop(ref) for ref in ready]
        self._on_done_many(attempts, _fetch(ready))
        if len(self._watched) > MANY:
            # a big fan-out: let outcomes gather so each wake-up handles a batch
            time.sleep(PACE_SECONDS)
        elif self._watched:
            time.sleep(SETTLE_PAUSE_SECONDS)

    def _refs_to_wait_on(self) -> list[Any]:
        """All watched refs, or, when there are many (a `ray.wait` costs ~0.15 µs
        per ref here, several times that on a busy driver), the oldest (Ray runs
        end roughly in submission order: in a 10k map, a wake-up's ended runs
        were all among the oldest 60-130) and the next `WINDOW` of the rest in
        turn, so a run that ends out of order is seen within a few dozen polls."""
        watched = self._watched
        if len(watched) <= 2 * WINDOW:
            return list(watched)
        head = min(WINDOW, max(HEAD, 2 * self._ended))
        start = max(self._sweep, head)
        if start >= len(watched):
            start = head
        self._sweep = start + WINDOW
        return [
            *itertools.islice(watched, head),
            *itertools.islice(watched, start, start + WINDOW),
        ]

    def _handle(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "done":
            self._on_done(event[1], event[2])
        elif kind == "watch":
            self._watched[event[1].state_ref] = event[1]
        elif kind == "recheck":
            self._on_error(event[1], event[2], upstreams_final=True)
        elif kind == "launch":
            self._relaunch(event[1], event[2])
        elif kind == "abandon":
            self._settle(event[1], _cancelled(), report=True)
        elif kind == "cancel_timers":
            timers, self._timers = self._timers, []
            for _, _, plan, _ in timers:
                self._finish(plan, _cancelled(), report=True)

    def _launch(self, plan: Plan, number: int) -> None:
        if self._cancelling:
            self._finish(plan, _cancelled(), report=True)
            return
        attempt = self.submitter.send(plan, number)
        with self._lock:
            self._outstanding[id(plan)] = attempt
        self._events.put(("watch", attempt))

    def _relaunch(self, plan: Plan, number: int) -> None:
        try:
            self._launch(plan, number)
        except Exception as exc:
            with self._lock:
                self._outstanding.pop(id(plan), None)
                self._idle.notify_all()
            message = f"The Ray runner could not submit this task run again: {exc}"
            self._finish(plan, Crashed(message=message).with_exception(exc), report=True)

    def _on_done(self, attempt: Attempt, outcome: Any) -> None:
        result, exc = outcome
        if exc is not None:  # Ray's error for this attempt
            self._on_error(attempt, exc, upstreams_final=False)
            return
        state, reports, value = decode_result(result, RayState, attempt.plan.call.task_run.id)
        call = attempt.plan.call
        if reports:
            with use_settings(call.settings):
                _reporter().extend(reports)
        if value is not None:
            state.with_value(value[0])
        self._settle(attempt, state.keeping_value_in(attempt.value_ref))

    def _on_done_many(self, attempts: list[Attempt], outcomes: list[Any]) -> None:
        """`_on_done` for one wake-up's outcomes: the results' reports go to the
        driver's reporter in one call per settings snapshot, the runs leave the
        outstanding set under one lock, then their futures are settled (each
        run's reports are queued before its future is final, as in `_on_done`)."""
        settled: list[tuple[Attempt, State]] = []
        shipped: dict[int, tuple[Any, list[Any]]] = {}  # id(settings) -> (settings, reports)
        for attempt, outcome in zip(attempts, outcomes, strict=True):
            result, exc = outcome
            if exc is not None:
                self._guarded(("done", attempt, outcome))
                continue
            try:
                state, reports, value = decode_result(
                    result, RayState, attempt.plan.call.task_run.id
                )
                if value is not None:  # it rode along: no ray.get for `.result()`
                    state.with_value(value[0])
                else:
                    state = state.keeping_value_in(attempt.value_ref)
            except Exception:  # a bug here must not leave a flow waiting forever
                self._guarded(("done", attempt, outcome))  # decodes again, crashes the run
                continue
            if reports:
                settings = attempt.plan.call.settings
                group = shipped.get(id(settings))
                if group is None:
                    shipped[id(settings)] = (settings, reports)
                else:
                    group[1].extend(reports)
            settled.append((attempt, state))
        try:
            if shipped:
                reporter = _reporter()
                for settings, reports in shipped.values():
                    reporter.extend_collected(reports, settings)
        except Exception as exc:
            logger.exception("internal error in the Ray runner's monitor")
            settled = [
                (a, Crashed(message=f"prefray's Ray runner failed: {exc!r}")) for a, _ in settled
            ]
        with self._lock:
            outstanding = self._outstanding
            for attempt, _ in settled:
                if outstanding.get(id(attempt.plan)) is attempt:
                    del outstanding[id(attempt.plan)]
            self._idle.notify_all()
        for attempt, state in settled:
            self._finish(attempt.plan, state, report=False)

    def _on_error(self, attempt: Attempt, exc: BaseException, upstreams_final: bool) -> None:
        if attempt.cancelled:
            self._settle(attempt, _cancelled(), report=True)
            return
        if is_dependency_failure(exc) and attempt.consumed:
            if not upstreams_final:
                self._recheck_when_upstreams_final(attempt, exc)
                return
            if any(upstream.failed for upstream in attempt.consumed):
                # it never ran: an input was lost with its producer; run it again
                # with the producers' final outcomes (no retry is used up)
                self._relaunch(attempt.plan, attempt.number)
                return
        attempt.failed = True
        self._crashed(attempt, exc)

    def _recheck_when_upstreams_final(self, attempt: Attempt, exc: BaseException) -> None:
        futures = {id(a.plan.future): a.plan.future for a in attempt.consumed}
        remaining = [len(futures)]
        lock = threading.Lock()

        def one_done(_: Any) -> None:
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                self._events.put(("recheck", attempt, exc))

        for future in futures.values():
            future._add_done_callback(one_done)

    def _crashed(self, attempt: Attempt, exc: BaseException) -> None:
        """Propose Crashed; the server's answer says whether the retries allow another go."""
        plan = attempt.plan
        task, call = plan.call.task, plan.call
        state = _crash_state(attempt, exc)
        if attempt.number > task.retries:
            state.state_details.retriable = False
        answer = _propose(call, state)
        if answer is not None and answer.state is not None and answer.state.is_scheduled():
            # the plan stays outstanding (close() waits for it) until its retry ends
            due = _delay_until(answer.state.state_details.scheduled_time)
            heapq.heappush(self._timers, (due, next(self._tick), plan, attempt.number + 1))
            logger.info("%s crashed (%s); retrying", call.task_run.name, describe(exc))
            return
        if state.exception is None:
            state.with_exception(user_facing_error(exc))
        self._settle(attempt, state)

    # endings ---------------------------------------------------------------------
    def _settle(self, attempt: Attempt, state: State, report: bool = False) -> None:
        with self._lock:
            if self._outstanding.get(id(attempt.plan)) is attempt:
                del self._outstanding[id(attempt.plan)]
            self._idle.notify_all()
        self._finish(attempt.plan, state, report)

    def _finish(self, plan: Plan, state: State, report: bool) -> None:
        if plan.future.is_final():
            return  # settled already (a cancelled run that was abandoned first)
        if report:
            with use_settings(plan.call.settings):
                _reporter().report(plan.call.task_run.id, state.copy_for_wire())
        plan.future.set_final(state)


def _fetch(refs: list[Any]) -> list[tuple[Any, BaseException | None]]:
    """(result, None) or (None, Ray's error) for each of `refs`, all ready: one
    `ray.get` for the batch, one per ref only when the batch holds an error."""
    import ray

    try:
        return [(result, None) for result in ray.get(refs)]
    except BaseException:  # noqa: S110 - told apart ref by ref below
        pass
    outcomes: list[tuple[Any, BaseException | None]] = []
    for ref in refs:
        try:
            outcomes.append((ray.get(ref), None))
        except BaseException as exc:  # Ray's error for this attempt, whatever its cause
            outcomes.append((None, exc))
    return outcomes


def _crash_state(attempt: Attempt, exc: BaseException) -> State:
    """Crashed with Ray's words; TimedOut when the worker was ended by the task's
    hard deadline (`task_runners.ray.deadline`)."""
    timeout = attempt.plan.call.task.timeout_seconds
    if is_hard_timeout(timeout, time.monotonic() - attempt.started):
        message = (
            f"Task run exceeded timeout of {timeout} seconds and did not return (blocked "
            f"outside Python): its Ray worker was stopped ({describe(exc)})"
        )
        from prefray.exceptions import TaskRunTimeout

        return Failed(name="TimedOut", message=message).with_exception(TaskRunTimeout(message))
    return Crashed(message=f"Ray could not run this task run: {describe(exc)}")


def _cancelled() -> State:
    return Cancelled(message="The flow run ended before this task run finished on Ray.")


def _reporter() -> Any:
    from prefray.engine.reporting import get_state_reporter

    return get_state_reporter()


def _propose(call: Any, state: State) -> Any:
    """A blocking proposal (after the driver's queued reports): None if the API is away."""
    from prefray.client import get_client

    try:
        with use_settings(call.settings):
            _reporter().flush(call.settings.api_request_timeout)
            with get_client(sync_client=True) as client:
                return client.set_task_run_state(call.task_run.id, state)
    except Exception as exc:
        logger.error("could not report %s for %s: %s", state.name, call.task_run.name, exc)
        return None


def _delay_until(when: Any) -> float:
    from prefray.states import now

    if when is None:
        return time.monotonic()
    return time.monotonic() + max(0.0, (when - now()).total_seconds())
