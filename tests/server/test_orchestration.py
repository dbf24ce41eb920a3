"""The orchestration rules as pure functions: every (from, to) pair, no I/O."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid

import pytest

from prefray.schemas import EmpiricalPolicy, SetStateStatus
from prefray.server.orchestration import RULES, RunSnapshot, orchestrate, retry_delay_seconds
from prefray.states import TERMINAL_TYPES, State, StateType

NOW = dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
FROM = [None, *StateType]
KINDS = ["task", "flow"]
ACCEPT, REJECT, WAIT = SetStateStatus.ACCEPT, SetStateStatus.REJECT, SetStateStatus.WAIT


def _state(t: StateType, at: dt.datetime = NOW, **details: object) -> State:
    s = State(type=t, timestamp=at)
    for k, v in details.items():
        setattr(s.state_details, k, v)
    return s


def _run(kind: str, current: StateType | None, retries: int = 0, run_count: int = 1) -> RunSnapshot:
    return RunSnapshot(
        kind=kind,  # type: ignore[arg-type]
        state=_state(current, NOW - dt.timedelta(seconds=10)) if current else None,
        run_count=run_count,
        empirical_policy=EmpiricalPolicy(retries=retries, retry_delay=5),
    )


def _expected(kind: str, frm: StateType | None, to: StateType, retries: int) -> tuple[str, str]:
    """The documented semantics, written independently of the rule classes:
    (status, name of the state the run ends in)."""
    to_name = State(type=to).name
    if frm is None:
        return ACCEPT, to_name
    current_name = State(type=frm).name
    if frm == StateType.CANCELLING:
        return (ACCEPT, to_name) if to == StateType.CANCELLED else (REJECT, current_name)
    if frm in (StateType.COMPLETED, StateType.CANCELLED):
        return REJECT, current_name
    if frm in (StateType.FAILED, StateType.CRASHED):
        retry_path = to in (StateType.SCHEDULED, StateType.RUNNING) and retries >= 1
        return (ACCEPT, to_name) if retry_path else (REJECT, current_name)
    retried = retries >= 1 and (
        (frm == StateType.RUNNING and to == StateType.FAILED)
        or (
            kind == "task"
            and frm in (StateType.RUNNING, StateType.PENDING)
            and to == StateType.CRASHED
        )
    )
    if retried:
        return REJECT, "AwaitingRetry"
    return ACCEPT, to_name


@pytest.mark.parametrize("retries", [0, 2])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("frm", "to"), list(itertools.product(FROM, StateType)))
def test_every_transition(kind: str, frm: StateType | None, to: StateType, retries: int) -> None:
    decision = orchestrate(_run(kind, frm, retries), _state(to), now=NOW, jitter=lambda f: 1.0)
    status, name = _expected(kind, frm, to, retries)
    assert decision.result.status == status, decision.result.reason
    assert decision.result.state is not None
    assert decision.result.state.name == name
    if status == REJECT:
        assert decision.result.reason  # every refusal says why
    written = decision.new_state is not None
    assert written == (status == ACCEPT or name == "AwaitingRetry")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("frm", "to"), list(itertools.product(FROM, StateType)))
def test_force_accepts_everything(kind: str, frm: StateType | None, to: StateType) -> None:
    decision = orchestrate(_run(kind, frm, retries=3), _state(to), force=True, now=NOW)
    assert decision.result.status == ACCEPT
    assert decision.new_state is not None and decision.new_state.type == to


def test_every_rule_names_its_states_and_explains_itself() -> None:
    for rule in RULES:
        assert rule.FROM_STATES and rule.TO_STATES, rule.__name__
        assert rule.__doc__, f"{rule.__name__} needs a one-sentence docstring"


def test_retries_exhausted_then_failed() -> None:
    run = _run("task", StateType.RUNNING, retries=2, run_count=3)
    decision = orchestrate(run, _state(StateType.FAILED), now=NOW)
    assert decision.result.status == ACCEPT and decision.new_state.type == StateType.FAILED


def test_not_retriable_failure_is_accepted() -> None:
    run = _run("task", StateType.RUNNING, retries=2)
    decision = orchestrate(run, _state(StateType.FAILED, retriable=False), now=NOW)
    assert decision.result.status == ACCEPT
    crash = orchestrate(run, _state(StateType.CRASHED, retriable=False), now=NOW)
    assert crash.result.status == ACCEPT


def test_retries_zero_never_retries_a_crash_before_running() -> None:
    run = _run("task", StateType.PENDING, retries=0, run_count=0)
    assert orchestrate(run, _state(StateType.CRASHED), now=NOW).result.status == ACCEPT


@pytest.mark.parametrize(
    ("delay", "attempt", "expected"),
    [(3, 1, 3.0), (3, 2, 3.0), ([1, 2, 4], 1, 1.0), ([1, 2, 4], 2, 2.0), ([1, 2, 4], 3, 4.0),
     ([1, 2, 4], 7, 4.0), ([], 1, 0.0)],
)  # fmt: skip
def test_retry_delay(delay: float | list[float], attempt: int, expected: float) -> None:
    assert retry_delay_seconds(EmpiricalPolicy(retries=9, retry_delay=delay), attempt) == expected


def test_retry_schedules_after_delay_list_indexed_by_attempt() -> None:
    policy = EmpiricalPolicy(retries=5, retry_delay=[1, 10, 100])
    for run_count, delay in [(1, 1), (2, 10), (3, 100), (4, 100)]:
        run = RunSnapshot(kind="task", state=_state(StateType.RUNNING), run_count=run_count,
                          empirical_policy=policy)  # fmt: skip
        decision = orchestrate(run, _state(StateType.FAILED, at=NOW), now=NOW)
        scheduled = decision.new_state.state_details.scheduled_time
        assert scheduled == NOW + dt.timedelta(seconds=delay)


def test_jitter_bounds() -> None:
    policy = EmpiricalPolicy(retries=1, retry_delay=10, retry_jitter_factor=0.5)
    run = RunSnapshot(kind="task", state=_state(StateType.RUNNING), run_count=1,
                      empirical_policy=policy)  # fmt: skip
    delays = set()
    for _ in range(200):  # the default (random) jitter stays in [1, 1.5]
        d = orchestrate(run, _state(StateType.FAILED), now=NOW).new_state
        delays.add((d.state_details.scheduled_time - NOW).total_seconds())
    assert min(delays) >= 10 and max(delays) <= 15 and len(delays) > 1
    low = orchestrate(run, _state(StateType.FAILED), now=NOW, jitter=lambda f: 1.0)
    high = orchestrate(run, _state(StateType.FAILED), now=NOW, jitter=lambda f: 1.0 + f)
    assert (low.new_state.state_details.scheduled_time - NOW).total_seconds() == 10
    assert (high.new_state.state_details.scheduled_time - NOW).total_seconds() == 15


def test_awaiting_retry_keeps_message_and_failure_time() -> None:
    run = _run("task", StateType.RUNNING, retries=1)
    failed = State(type=StateType.FAILED, message="boom", timestamp=NOW)
    decision = orchestrate(run, failed, now=NOW + dt.timedelta(seconds=30))
    assert decision.new_state.message == "boom" and decision.new_state.timestamp == NOW


def test_wait_for_scheduled_time() -> None:
    future = _state(StateType.SCHEDULED, scheduled_time=NOW + dt.timedelta(seconds=42))
    run = RunSnapshot(kind="task", state=future)
    decision = orchestrate(run, _state(StateType.RUNNING), now=NOW)
    assert decision.result.status == WAIT and decision.result.delay_seconds == 42
    assert decision.new_state is None
    later = orchestrate(run, _state(StateType.RUNNING), now=NOW + dt.timedelta(seconds=43))
    assert later.result.status == ACCEPT


def _cached() -> State:
    from prefray.states import ResultReference

    s = _state(StateType.COMPLETED, cache_key="k", cache_expiration=NOW + dt.timedelta(hours=1))
    s.data = ResultReference(storage_key="abc")
    return s


def test_cache_hit_completes_the_run_as_cached() -> None:
    run = RunSnapshot(kind="task", state=_state(StateType.PENDING), run_count=0)
    decision = orchestrate(run, _state(StateType.RUNNING, cache_key="k"), now=NOW, cached=_cached())
    assert decision.result.status == REJECT
    state = decision.new_state
    assert state.type == StateType.COMPLETED and state.name == "Cached"
    assert state.data is not None and state.data.storage_key == "abc"
    assert decision.updates.run_count == 0 and decision.updates.end_time == NOW


def test_cache_miss_and_refresh_run_normally() -> None:
    run = RunSnapshot(kind="task", state=_state(StateType.PENDING), run_count=0)
    miss = orchestrate(run, _state(StateType.RUNNING, cache_key="k"), now=NOW, cached=None)
    assert miss.result.status == ACCEPT
    refresh = _state(StateType.RUNNING, cache_key="k", refresh_cache=True)
    assert orchestrate(run, refresh, now=NOW, cached=_cached()).result.status == ACCEPT


def test_completed_with_cache_key_records_it() -> None:
    run = RunSnapshot(kind="task", state=_state(StateType.RUNNING), run_count=1)
    expires = NOW + dt.timedelta(days=1)
    done = _state(StateType.COMPLETED, cache_key="k", cache_expiration=expires)
    updates = orchestrate(run, done, now=NOW).updates
    assert updates.record_cache_key and updates.cache_key == "k"
    assert updates.cache_expiration == expires
    plain = orchestrate(run, _state(StateType.COMPLETED), now=NOW).updates
    assert not plain.record_cache_key


def test_same_transition_id_is_idempotent() -> None:
    tid = uuid.uuid4()
    current = _state(StateType.RUNNING, transition_id=tid)
    run = RunSnapshot(kind="task", state=current, run_count=1, seen_transition_ids=frozenset({tid}))
    decision = orchestrate(run, _state(StateType.RUNNING, transition_id=tid), now=NOW)
    assert decision.result.status == ACCEPT and decision.result.state is current
    assert decision.new_state is None
    # even a proposal that would otherwise be refused is a harmless replay
    done = RunSnapshot(
        kind="task", state=_state(StateType.COMPLETED), seen_transition_ids=frozenset({tid})
    )
    assert (
        orchestrate(done, _state(StateType.RUNNING, transition_id=tid), now=NOW).result.status
        == ACCEPT
    )


def test_bookkeeping_over_a_run() -> None:
    t = [NOW + dt.timedelta(seconds=s) for s in range(10)]
    run = RunSnapshot(kind="task", state=None, empirical_policy=EmpiricalPolicy(retries=1))
    steps = [(StateType.PENDING, 0), (StateType.RUNNING, 1), (StateType.FAILED, 4),
             (StateType.RUNNING, 6), (StateType.COMPLETED, 9)]  # fmt: skip
    import dataclasses

    for state_type, at in steps:
        d = orchestrate(run, _state(state_type, at=t[at]), now=t[at])
        u = d.updates
        run = dataclasses.replace(run, state=d.new_state, run_count=u.run_count,
                                  start_time=u.start_time, end_time=u.end_time,
                                  total_run_time=u.total_run_time)  # fmt: skip
        if state_type == StateType.FAILED:
            assert d.new_state.name == "AwaitingRetry"
            assert u.end_time is None and u.total_run_time == 3.0
    assert run.run_count == 2
    assert run.start_time == t[1]
    assert run.end_time == t[9]
    assert run.total_run_time == 3.0 + 3.0


def test_terminal_sets_end_time_and_paused_resume_keeps_run_count() -> None:
    run = RunSnapshot(kind="flow", state=_state(StateType.PAUSED), run_count=1, start_time=NOW)
    d = orchestrate(run, _state(StateType.RUNNING), now=NOW)
    assert d.updates.run_count == 1 and d.updates.start_time == NOW
    for terminal in TERMINAL_TYPES:
        d = orchestrate(_run("flow", StateType.RUNNING), _state(terminal), now=NOW, force=True)
        assert d.updates.end_time == NOW
