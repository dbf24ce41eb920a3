"""The TagConcurrencyLimits rule as pure code: no I/O, slot counts passed in."""

from __future__ import annotations

import datetime as dt

import pytest

from prefray.schemas import EmpiricalPolicy, SetStateStatus
from prefray.server.orchestration import RunSnapshot, SlotCounts, orchestrate
from prefray.states import Completed, Failed, Pending, Running, Scheduled, State, StateType

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _decide(current: State | None, slots: SlotCounts | None, proposed: State | None = None):
    run = RunSnapshot(kind="task", state=current, empirical_policy=EmpiricalPolicy(retries=1))
    return orchestrate(run, proposed or Running(), now=NOW, slots=slots, jitter=lambda f: 1.0)


def test_free_slot_accepts() -> None:
    decision = _decide(Pending(), SlotCounts(limits={"db": 2}, active={"db": 1}))
    assert decision.result.status == SetStateStatus.ACCEPT
    assert decision.new_state is not None and decision.new_state.type == StateType.RUNNING


def test_full_limit_waits_and_writes_nothing() -> None:
    decision = _decide(Pending(), SlotCounts(limits={"db": 2, "web": 5}, active={"db": 2}))
    assert decision.result.status == SetStateStatus.WAIT
    assert decision.result.delay_seconds == pytest.approx(0.5)
    assert decision.new_state is None
    assert decision.result.reason == "waiting for a concurrency slot of tag 'db' (2 of 2 in use)"


def test_any_full_tag_blocks() -> None:
    slots = SlotCounts(limits={"a": 1, "b": 1}, active={"a": 0, "b": 1})
    assert _decide(Pending(), slots).result.status == SetStateStatus.WAIT


def test_zero_limit_aborts_even_when_nothing_runs() -> None:
    decision = _decide(Pending(), SlotCounts(limits={"db": 3, "never": 0}, active={}))
    assert decision.result.status == SetStateStatus.ABORT
    assert "tag 'never' has a concurrency limit of 0" in (decision.result.reason or "")
    assert decision.new_state is None


def test_no_limits_or_no_slots_info_accepts() -> None:
    assert _decide(Pending(), None).result.status == SetStateStatus.ACCEPT
    assert _decide(Pending(), SlotCounts({}, {})).result.status == SetStateStatus.ACCEPT


def test_retry_from_awaiting_retry_also_needs_a_slot() -> None:
    slots = SlotCounts(limits={"db": 1}, active={"db": 1})
    awaiting = Scheduled(name="AwaitingRetry")
    assert _decide(awaiting, slots).result.status == SetStateStatus.WAIT
    failed = Failed()
    assert _decide(failed, slots).result.status == SetStateStatus.WAIT


def test_already_running_is_not_limited_again() -> None:
    slots = SlotCounts(limits={"db": 1}, active={"db": 1})
    assert _decide(Running(), slots).result.status == SetStateStatus.ACCEPT


def test_a_cached_result_needs_no_slot() -> None:
    proposed = Running()
    proposed.state_details.cache_key = "k"
    run = RunSnapshot(kind="task", state=Pending())
    decision = orchestrate(
        run,
        proposed,
        now=NOW,
        cached=Completed(),
        slots=SlotCounts(limits={"db": 0}, active={}),
    )
    assert decision.result.status == SetStateStatus.REJECT
    assert decision.new_state is not None and decision.new_state.name == "Cached"


def test_flow_runs_and_force_are_not_limited() -> None:
    slots = SlotCounts(limits={"db": 0}, active={})
    flow = orchestrate(RunSnapshot(kind="flow", state=Pending()), Running(), now=NOW, slots=slots)
    assert flow.result.status == SetStateStatus.ACCEPT
    forced = orchestrate(
        RunSnapshot(kind="task", state=Pending()), Running(), now=NOW, slots=slots, force=True
    )
    assert forced.result.status == SetStateStatus.ACCEPT
