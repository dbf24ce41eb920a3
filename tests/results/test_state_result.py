"""`State.result()` for every state type."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefray import states as s
from prefray.exceptions import (
    CancelledRun,
    CrashedRun,
    FailedRun,
    MissingResult,
    PausedRun,
    UnfinishedRun,
    UpstreamTaskError,
)
from prefray.results import persist_result
from prefray.states import State, StateType


def test_completed_with_value() -> None:
    assert s.Completed().with_value(3).result() == 3
    assert s.Completed().with_value(None).result() is None
    assert s.Cached().with_value("hit").result() == "hit"


def test_completed_value_survives_pickling() -> None:
    import cloudpickle

    state = cloudpickle.loads(cloudpickle.dumps(s.Completed().with_value([1])))
    assert state.result() == [1]


def test_completed_from_persisted_result(tmp_path: Path) -> None:
    ref = persist_result({"v": 1}, storage=tmp_path, serializer="json")
    state = State.model_validate(s.Completed(data=ref).model_dump(mode="json"))  # as from the API
    assert not state.has_value
    assert state.result() == {"v": 1}


def test_completed_without_value_or_data_explains_persistence() -> None:
    state = State.model_validate(s.Completed().model_dump(mode="json"))
    with pytest.raises(MissingResult, match="persist_result=True"):
        state.result()


@pytest.mark.parametrize(
    ("make", "error"),
    [(s.Failed, FailedRun), (s.Crashed, CrashedRun), (s.Cancelled, CancelledRun)],
)
def test_failure_from_api_builds_an_error_from_the_message(make, error) -> None:
    state = make(message="worker died")
    with pytest.raises(error, match="worker died"):
        state.result()
    returned = state.result(raise_on_failure=False)
    assert isinstance(returned, error) and str(returned) == "worker died"


def test_failure_without_message_names_the_state() -> None:
    with pytest.raises(FailedRun, match="Failed"):
        s.Failed().result()


@pytest.mark.parametrize("make", [s.Failed, s.Crashed, s.Cancelled])
def test_attached_exception_is_raised_or_returned(make) -> None:
    boom = KeyError("boom")
    state = make(message="x").with_exception(boom)
    with pytest.raises(KeyError) as info:
        state.result()
    assert info.value is boom
    assert state.result(raise_on_failure=False) is boom


def test_failed_ignores_an_attached_value() -> None:
    with pytest.raises(FailedRun):
        s.Failed(message="m").with_value(1).result()


def test_not_ready_is_an_upstream_error() -> None:
    state = s.Pending(name="NotReady", message="upstream task run 'a' failed")
    with pytest.raises(UpstreamTaskError, match="upstream task run 'a' failed"):
        state.result()
    with pytest.raises(UpstreamTaskError):
        state.result(raise_on_failure=False)


def test_paused_has_no_result() -> None:
    for state in (s.Paused(), s.Suspended()):
        with pytest.raises(PausedRun, match="resumed"):
            state.result()


@pytest.mark.parametrize(
    "make", [s.Scheduled, s.Pending, s.Running, s.AwaitingRetry, s.Retrying, s.Cancelling]
)
def test_unfinished_states_raise(make) -> None:
    state = make()
    with pytest.raises(UnfinishedRun, match="has not finished"):
        state.result()


def test_every_state_type_is_covered() -> None:
    for state_type in StateType:
        state = State(type=state_type)
        try:
            state.result(raise_on_failure=False)
        except (MissingResult, PausedRun, UnfinishedRun):
            pass
