"""Every client method against the real server, through both clients."""

from __future__ import annotations

import datetime as dt
import logging
import uuid

import pytest

from prefray.client import _routes
from prefray.exceptions import InvalidRequest
from prefray.schemas import (
    FlowRun,
    LogCreate,
    OrchestrationResult,
    SetStateStatus,
    StateReport,
    TaskRun,
    TaskRunCreate,
)
from prefray.states import Completed, Running, StateType, now

from .helpers import Call


def _task_run(flow_run_id: uuid.UUID, key: str = "0", name: str = "t") -> TaskRunCreate:
    return TaskRunCreate(
        id=uuid.uuid4(),
        name=f"{name}-{key}",
        flow_run_id=flow_run_id,
        task_key=name,
        dynamic_key=key,
    )


def test_health_and_version(call: Call) -> None:
    assert call("health") == {"status": "ok"}
    assert set(call("api_version")) >= {"api_version", "server_version"}


def test_create_and_read_flow_run(call: Call) -> None:
    run_id = uuid.uuid4()
    created = call(
        "create_flow_run", "etl", id=run_id, name="nightly", parameters={"n": 3}, tags=["a"]
    )
    assert isinstance(created, FlowRun)
    assert (created.id, created.name, created.flow_name) == (run_id, "nightly", "etl")
    assert created.parameters == {"n": 3} and created.tags == ["a"]
    assert call("read_flow_run", str(run_id)).id == run_id


def test_create_flow_run_replay_returns_the_existing_run(call: Call) -> None:
    run_id = uuid.uuid4()
    first = call("create_flow_run", "etl", id=run_id, name="once")
    again = call("create_flow_run", "etl", id=run_id, name="once")
    assert again.id == first.id and again.name == "once"


def test_unjsonable_parameters_are_recorded_by_repr(call: Call) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    run = call("create_flow_run", "etl", parameters={"x": Opaque(), "y": [1, 2]})
    assert run.parameters == {"x": "<opaque>", "y": [1, 2]}


def test_read_flow_runs_filters(call: Call) -> None:
    flow_name = f"filtered-{uuid.uuid4().hex[:8]}"
    runs = [call("create_flow_run", flow_name) for _ in range(3)]
    call("set_flow_run_state", runs[0].id, Running())
    found = call("read_flow_runs", flow_name=flow_name)
    assert {r.id for r in found} == {r.id for r in runs}
    running = call("read_flow_runs", flow_name=flow_name, state_types=[StateType.RUNNING])
    assert [r.id for r in running] == [runs[0].id]
    assert len(call("read_flow_runs", flow_name=flow_name, limit=2)) == 2


def test_flow_run_states(call: Call) -> None:
    run = call("create_flow_run", "etl")
    result = call("set_flow_run_state", run.id, Running())
    assert isinstance(result, OrchestrationResult) and result.status is SetStateStatus.ACCEPT
    call("set_flow_run_state", run.id, Completed(message="done"))
    states = call("read_flow_run_states", run.id)
    assert [s.type for s in states][-2:] == [StateType.RUNNING, StateType.COMPLETED]
    assert call("read_flow_run", run.id).state_type is StateType.COMPLETED


def test_resume_a_run_that_is_not_paused_is_rejected_with_a_reason(call: Call) -> None:
    run = call("create_flow_run", "etl")
    result = call("resume_flow_run", run.id, run_input={"ok": True})
    assert result.status is SetStateStatus.REJECT and result.reason


def test_task_runs_one_and_bulk(call: Call) -> None:
    flow_run = call("create_flow_run", "etl")
    one = call("create_task_run", _task_run(flow_run.id, "single"))
    assert isinstance(one, TaskRun) and call("read_task_run", one.id).id == one.id
    creates = [_task_run(flow_run.id, str(i), name="mapped") for i in range(300)]
    created = call("create_task_runs", creates)
    assert [t.id for t in created] == [c.id for c in creates]  # request order
    listed = call("read_task_runs", flow_run_id=flow_run.id, limit=1000)
    assert len(listed) == 301
    assert len(call("read_task_runs", flow_run.id, task_key="mapped", limit=1000)) == 300


def test_create_task_runs_minimal_answer(call: Call) -> None:
    flow_run = call("create_flow_run", "etl")
    creates = [_task_run(flow_run.id, str(i), name="min") for i in range(3)]
    creates[1] = creates[1].model_copy(update={"states": [Running(), Completed()]})
    assert call("create_task_runs", creates, answer="minimal") == [None] * 3  # created as sent
    replayed = call("create_task_runs", creates, answer="minimal")  # existed: stored runs
    assert [t.id for t in replayed] == [c.id for c in creates]
    assert replayed[1].state is not None and replayed[1].state.type is StateType.COMPLETED
    with pytest.raises(InvalidRequest, match="answer"):
        call("create_task_runs", creates, answer="some")


def test_report_task_run_states_minimal_answer(call: Call) -> None:
    flow_run = call("create_flow_run", "etl")
    [run] = call("create_task_runs", [_task_run(flow_run.id)])
    reports = [StateReport(task_run_id=run.id, state=s) for s in (Running(), Completed())]
    reports.append(StateReport(task_run_id=run.id, state=Running()))  # refused: done
    accepted, done, refused = call("report_task_run_states", reports, answer="minimal")
    assert accepted is None and done is None
    assert refused.status is SetStateStatus.REJECT
    with pytest.raises(InvalidRequest, match="answer"):
        call("report_task_run_states", reports, answer="none")


def test_create_task_runs_accepts_dicts_and_empty_lists(call: Call) -> None:
    flow_run = call("create_flow_run", "etl")
    assert call("create_task_runs", []) == []
    created = call(
        "create_task_runs",
        [{"name": "d", "flow_run_id": str(flow_run.id), "task_key": "d", "dynamic_key": "0"}],
    )
    assert created[0].name == "d"


def test_task_run_states_single_and_batched(call: Call) -> None:
    flow_run = call("create_flow_run", "etl")
    runs = call("create_task_runs", [_task_run(flow_run.id, str(i)) for i in range(50)])
    assert call("set_task_run_state", runs[0].id, Running()).status is SetStateStatus.ACCEPT
    reports = [StateReport(task_run_id=r.id, state=Running()) for r in runs[1:]]
    reports += [StateReport(task_run_id=r.id, state=Completed()) for r in runs]
    results = call("report_task_run_states", reports)
    assert len(results) == len(reports)
    assert all(r.status is SetStateStatus.ACCEPT for r in results)
    states = call("read_task_run_states", runs[0].id)
    assert [s.type for s in states][-2:] == [StateType.RUNNING, StateType.COMPLETED]


def test_logs(call: Call) -> None:
    flow_run = call("create_flow_run", "etl")
    stamp = now()
    logs = [
        LogCreate(
            level=logging.INFO if i % 2 else logging.ERROR,
            message=f"line {i}",
            timestamp=stamp + dt.timedelta(milliseconds=i),
            flow_run_id=flow_run.id,
        )
        for i in range(10)
    ]
    assert call("create_logs", logs) == {"count": 10}
    read = call("read_logs", flow_run_id=flow_run.id)
    assert [log.message for log in read] == [f"line {i}" for i in range(10)]
    errors = call("read_logs", flow_run_id=flow_run.id, level_ge=logging.ERROR)
    assert len(errors) == 5
    assert len(call("read_logs", flow_run_id=flow_run.id, limit=3, offset=8)) == 2


def test_large_batches_are_chunked_in_order(call: Call, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_routes, "BULK_CHUNK_SIZE", 7)
    flow_run = call("create_flow_run", "etl")
    creates = [_task_run(flow_run.id, str(i)) for i in range(20)]
    runs = call("create_task_runs", creates)
    assert [r.id for r in runs] == [c.id for c in creates]
    reports = [StateReport(task_run_id=r.id, state=Running()) for r in runs]
    assert len(call("report_task_run_states", reports)) == 20
    logs = [LogCreate(level=20, message="m", timestamp=now(), flow_run_id=flow_run.id)] * 15
    assert call("create_logs", logs) == {"count": 15}
    assert len(_routes.report_task_run_states(reports).calls) == 3
