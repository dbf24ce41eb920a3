"""The orchestration rules: which state a run may move to, as pure code.

No I/O happens here: the storage layer loads a `RunSnapshot`, calls
`orchestrate(...)`, and writes what the returned `Decision` says. The rules
are small classes with `FROM_STATES`/`TO_STATES` and one sentence explaining
each refusal; `RULES` lists them in the order they are consulted (the first
rule that decides wins; when none does, the proposal is accepted).

Bookkeeping (run count, start/end time, total run time) follows every state
that is written, whether the client proposed it or a rule chose it, and uses
the written state's own timestamp so that a batch reported late still records
when things happened.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

from prefray.schemas import EmpiricalPolicy, OrchestrationResult, SetStateStatus
from prefray.states import TERMINAL_TYPES, State, StateDetails, StateType

__all__ = [
    "ALL_TYPES",
    "Decision",
    "RULES",
    "RunKind",
    "RunSnapshot",
    "RunUpdates",
    "SLOT_WAIT_SECONDS",
    "SlotCounts",
    "bookkeeping",
    "orchestrate",
    "retry_delay_seconds",
]

RunKind = Literal["task", "flow"]
# (read once: an enum member looked up on its class costs a descriptor call each time)
_RUNNING, _PAUSED, _COMPLETED = StateType.RUNNING, StateType.PAUSED, StateType.COMPLETED
ALL_TYPES = frozenset(StateType)
_NOT_TERMINAL = ALL_TYPES - TERMINAL_TYPES


@dataclasses.dataclass(frozen=True)
class RunSnapshot:
    """What the rules need to know about a run (loaded by the storage layer)."""

    kind: RunKind
    state: State | None
    run_count: int = 0
    empirical_policy: EmpiricalPolicy = dataclasses.field(default_factory=EmpiricalPolicy)
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    total_run_time: float = 0.0
    seen_transition_ids: frozenset[uuid.UUID] = frozenset()


# how long a task run waits before asking again for a tag concurrency slot
SLOT_WAIT_SECONDS = 0.5


@dataclasses.dataclass(frozen=True)
class SlotCounts:
    """The tag concurrency limits on one task run (loaded by the storage layer).

    `limits`: tag -> limit, for the run's tags that have one; `active`: tag ->
    slots held by *other* task runs right now.
    """

    limits: Mapping[str, int]
    active: Mapping[str, int]


@dataclasses.dataclass(frozen=True)
class RunUpdates:
    """The run-row fields after a transition (only meaningful when a state is written)."""

    run_count: int
    start_time: dt.datetime | None
    end_time: dt.datetime | None
    total_run_time: float
    cache_key: str | None = None
    cache_expiration: dt.datetime | None = None
    record_cache_key: bool = False


@dataclasses.dataclass(frozen=True)
class Decision:
    """The answer to a proposal; `new_state` is None when nothing is written."""

    result: OrchestrationResult
    new_state: State | None = None
    updates: RunUpdates | None = None


@dataclasses.dataclass(frozen=True)
class _Context:
    run: RunSnapshot
    proposed: State
    now: dt.datetime
    cached: State | None
    jitter: Callable[[float], float]
    slots: SlotCounts | None = None

    @property
    def current_type(self) -> StateType | None:
        return self.run.state.type if self.run.state is not None else None

    @property
    def attempts(self) -> int:
        # a run that crashed before it ever ran still used up one attempt
        return max(self.run.run_count, 1)

    def may_retry(self) -> bool:
        return self.attempts <= self.run.empirical_policy.retries


class Rule:
    """One orchestration rule. `decide` returns None to let later rules speak."""

    FROM_STATES: ClassVar[frozenset[StateType | None]]
    TO_STATES: ClassVar[frozenset[StateType]]
    KINDS: ClassVar[frozenset[str]] = frozenset({"task", "flow"})

    @classmethod
    def applies(cls, ctx: _Context) -> bool:
        return (
            ctx.run.kind in cls.KINDS
            and ctx.current_type in cls.FROM_STATES
            and ctx.proposed.type in cls.TO_STATES
        )

    @classmethod
    def decide(cls, ctx: _Context) -> Decision | None:  # pragma: no cover - abstract
        raise NotImplementedError


class RetryFailedRuns(Rule):
    """A failure with retries left becomes AwaitingRetry instead of Failed."""

    FROM_STATES = frozenset({StateType.RUNNING})
    TO_STATES = frozenset({StateType.FAILED})

    @classmethod
    def decide(cls, ctx: _Context) -> Decision | None:
        if ctx.proposed.state_details.retriable is False or not ctx.may_retry():
            return None
        return _retry(ctx)


class RetryCrashedTaskRuns(Rule):
    """A task run whose worker died is retried like a failure, unless marked not retriable."""

    FROM_STATES = frozenset({StateType.RUNNING, StateType.PENDING})
    TO_STATES = frozenset({StateType.CRASHED})
    KINDS = frozenset({"task"})

    decide = RetryFailedRuns.decide


class CancellingOnlyBecomesCancelled(Rule):
    """Once cancellation is requested, the only way on is Cancelled."""

    FROM_STATES = frozenset({StateType.CANCELLING})
    TO_STATES = ALL_TYPES - {StateType.CANCELLED}

    @classmethod
    def decide(cls, ctx: _Context) -> Decision | None:
        return _reject(ctx, "a Cancelling run may only become Cancelled")


class FinishedRunsNeverRunAgain(Rule):
    """A Completed run is never run a second time."""

    FROM_STATES = frozenset({StateType.COMPLETED})
    TO_STATES = frozenset({StateType.RUNNING})

    @classmethod
    def decide(cls, ctx: _Context) -> Decision | None:
        return _reject(ctx, "the run is already Completed; a finished run never runs twice")


class TerminalRunsAcceptNoNewState(Rule):
    """Only the retry path leaves Failed/Crashed; nothing leaves Completed or Cancelled."""

    FROM_STATES = frozenset(TERMINAL_TYPES)
    TO_STATES = ALL_TYPES

    @classmethod
    def decide(cls, ctx: _Context) -> Decision | None:
        retry_path = (
            ctx.current_type in (StateType.FAILED, StateType.CRASHED)
            and ctx.proposed.type in (StateType.SCHEDULED, StateType.RUNNING)
            and ctx.may_retry()
        )
        if retry_path:
            return None
        name = ctx.run.state.name if ctx.run.state else "?"
        return _reject(
            ctx,
            f"the run is already {name} (a terminal state) and accepts no new state; "
            "propose with force=True to override",
        )


class WaitForScheduledTime(Rule):
    """A Scheduled run starts no earlier than its scheduled time (WAIT until then)."""

    FROM_STATES = frozenset({StateType.SCHEDULED})
    TO_STATES = frozenset({StateType.RUNNING})

    @classmethod
    def decide(cls, ctx: _Context) -> Decision | None:
        assert ctx.run.state is not None
        scheduled = ctx.run.state.state_details.scheduled_time
        if scheduled is None or scheduled <= ctx.now:
            return None
        delay = (scheduled - ctx.now).total_seconds()
        return _wait(ctx, f"the run is scheduled to start at {scheduled.isoformat()}", delay)


class UseCachedResult(Rule):
    """A task run with a valid cached result completes as Cached instead of running."""

    FROM_STATES = frozenset(_NOT_TERMINAL) | {None}
    TO_STATES = frozenset({StateType.RUNNING})
    KINDS = frozenset({"task"})

    @classmethod
    def decide(cls, ctx: _Context) -> Decision | None:
        details = ctx.proposed.state_details
        if ctx.cached is None or not details.cache_key or details.refresh_cache:
            return None
        cached_details = ctx.cached.state_details
        new_state = State(
            type=StateType.COMPLETED,
            name="Cached",
            message=f"cached result found for key {details.cache_key!r}",
            timestamp=ctx.proposed.timestamp,
            state_details=_details_for(
                ctx.proposed,
                cache_key=details.cache_key,
                cache_expiration=cached_details.cache_expiration,
            ),
            data=ctx.cached.data,
        )
        reason = "a cached result exists for this cache key"
        return _written(ctx, new_state, SetStateStatus.REJECT, reason)


class TagConcurrencyLimits(Rule):
    """A task run with a limited tag starts only while that tag has a free slot;
    a limit of 0 means it may never run (ABORT)."""

    FROM_STATES = (ALL_TYPES - {StateType.RUNNING}) | {None}
    TO_STATES = frozenset({StateType.RUNNING})
    KINDS = frozenset({"task"})

    @classmethod
    def decide(cls, ctx: _Context) -> Decision | None:
        slots = ctx.slots
        if slots is None or not slots.limits:
            return None
        for tag, limit in sorted(slots.limits.items()):
            if limit == 0:
                reason = (
                    f"tag {tag!r} has a concurrency limit of 0, so task runs carrying it can "
                    f"never run; raise the limit (prefray concurrency-limit create {tag} N) "
                    "or delete it"
                )
                return Decision(
                    result=OrchestrationResult(
                        status=SetStateStatus.ABORT, state=ctx.run.state, reason=reason
                    )
                )
        full = [
            f"{tag!r} ({slots.active.get(tag, 0)} of {limit} in use)"
            for tag, limit in sorted(slots.limits.items())
            if slots.active.get(tag, 0) >= limit
        ]
        if not full:
            return None
        delay = SLOT_WAIT_SECONDS * ctx.jitter(0.5)
        return _wait(ctx, f"waiting for a concurrency slot of tag {', '.join(full)}", delay)


RULES: tuple[type[Rule], ...] = (
    CancellingOnlyBecomesCancelled,
    FinishedRunsNeverRunAgain,
    TerminalRunsAcceptNoNewState,
    RetryFailedRuns,
    RetryCrashedTaskRuns,
    WaitForScheduledTime,
    UseCachedResult,
    TagConcurrencyLimits,
)


def orchestrate(
    run: RunSnapshot,
    proposed: State,
    *,
    force: bool = False,
    now: dt.datetime,
    cached: State | None = None,
    jitter: Callable[[float], float] | None = None,
    slots: SlotCounts | None = None,
) -> Decision:
    """Decide what happens when `proposed` is proposed for `run`.

    `cached` is the newest unexpired Completed state with the proposed cache
    key (the caller looks it up only for a proposed Running with a cache key).
    `jitter(factor)` returns a multiplier in `[1, 1 + factor]` (random by default).
    `slots` are the tag concurrency limits on a task run proposed Running.
    """
    transition_id = proposed.state_details.transition_id
    if transition_id is not None and transition_id in run.seen_transition_ids:
        return Decision(
            result=OrchestrationResult(
                status=SetStateStatus.ACCEPT,
                state=run.state,
                reason="this transition was already applied",
            )
        )
    ctx = _Context(run, proposed, now, cached, jitter or _random_jitter, slots)
    if not force:
        for rule in RULES:
            if rule.applies(ctx):
                decision = rule.decide(ctx)
                if decision is not None:
                    return decision
    return _written(ctx, proposed, SetStateStatus.ACCEPT, None)


def retry_delay_seconds(policy: EmpiricalPolicy, attempt: int) -> float:
    """The base delay before retry number `attempt` (1-based); a list's last value repeats."""
    delay = policy.retry_delay
    if isinstance(delay, list):
        if not delay:
            return 0.0
        return float(delay[min(attempt, len(delay)) - 1])
    return float(delay)


def _random_jitter(factor: float) -> float:
    return 1.0 + random.uniform(0.0, factor)


def _retry(ctx: _Context) -> Decision:
    policy = ctx.run.empirical_policy
    delay = retry_delay_seconds(policy, ctx.attempts)
    if policy.retry_jitter_factor:
        delay *= ctx.jitter(policy.retry_jitter_factor)
    new_state = State(
        type=StateType.SCHEDULED,
        name="AwaitingRetry",
        message=ctx.proposed.message,
        timestamp=ctx.proposed.timestamp,
        state_details=_details_for(
            ctx.proposed, scheduled_time=ctx.now + dt.timedelta(seconds=delay)
        ),
        data=ctx.proposed.data,
    )
    reason = (
        f"retry {ctx.attempts} of {policy.retries} will start in {delay:.3g} seconds "
        f"(the run was {ctx.proposed.name})"
    )
    return _written(ctx, new_state, SetStateStatus.REJECT, reason)


def _details_for(proposed: State, **changes: object) -> StateDetails:
    """The proposal's identifying details (run ids, transition id) plus `changes`."""
    base = proposed.state_details
    return StateDetails(
        flow_run_id=base.flow_run_id,
        task_run_id=base.task_run_id,
        child_flow_run_id=base.child_flow_run_id,
        transition_id=base.transition_id,
        **changes,  # type: ignore[arg-type]
    )


def _reject(ctx: _Context, reason: str) -> Decision:
    return Decision(
        result=OrchestrationResult(status=SetStateStatus.REJECT, state=ctx.run.state, reason=reason)
    )


def _wait(ctx: _Context, reason: str, delay: float) -> Decision:
    result = OrchestrationResult(
        status=SetStateStatus.WAIT, state=ctx.run.state, reason=reason, delay_seconds=delay
    )
    return Decision(result=result)


def _written(
    ctx: _Context, new_state: State, status: SetStateStatus, reason: str | None
) -> Decision:
    result = OrchestrationResult(status=status, state=new_state, reason=reason)
    return Decision(result=result, new_state=new_state, updates=_run_updates(ctx.run, new_state))


def _run_updates(run: RunSnapshot, new: State) -> RunUpdates:
    current = run.state
    return bookkeeping(
        current.type if current is not None else None,
        current.timestamp if current is not None else None,
        run.run_count,
        run.start_time,
        run.end_time,
        run.total_run_time,
        new,
    )


def bookkeeping(
    current_type: StateType | None,
    current_timestamp: dt.datetime | None,
    run_count: int,
    start_time: dt.datetime | None,
    end_time: dt.datetime | None,
    total_run_time: float,
    new: Any,
) -> RunUpdates:
    """The run fields after writing `new` over a run whose current state has
    `current_type` and `current_timestamp` (both None for a new run).

    Takes plain fields rather than a `RunSnapshot` so the storage layer's hot
    path can call it without parsing the current state; `new` is a `State` or
    its wire twin (anything with `type`, `timestamp` and `state_details`).
    """
    kind, timestamp = new.type, new.timestamp
    was_running = current_type == _RUNNING
    if kind == _RUNNING and not was_running:
        # resuming a paused run continues the same attempt
        if current_type != _PAUSED:
            run_count += 1
        if start_time is None:
            start_time = timestamp
    if was_running and kind != _RUNNING and current_timestamp is not None:
        total_run_time += max(0.0, (timestamp - current_timestamp).total_seconds())
    if kind in TERMINAL_TYPES:
        end_time = timestamp
    elif current_type in TERMINAL_TYPES:
        end_time = None
    details = new.state_details
    record = kind == _COMPLETED and bool(details.cache_key)
    return RunUpdates(
        run_count,
        start_time,
        end_time,
        total_run_time,
        details.cache_key if record else None,
        details.cache_expiration if record else None,
        record,
    )
