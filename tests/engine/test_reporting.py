"""The batched state reporter against a real API server over HTTP."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefray.client import get_client
from prefray.client.embedded import EmbeddedAPI, start_api
from prefray.engine.reporting import CollectingReporter, StateReporter, get_state_reporter
from prefray.exceptions import APIUnavailable
from prefray.schemas import SetStateStatus, StateReport, TaskRunCreate
from prefray.settings import Settings, use_settings
from prefray.states import Completed, Running, StateType


@pytest.fixture
def settings(embedded_api: EmbeddedAPI, tmp_path: Path) -> Iterator[Settings]:
    s = Settings(
        home=tmp_path, api_url=embedded_api.url, api_max_retries=1, state_batch_interval=0.05
    )
    with use_settings(s):
        yield s


def creates(n: int, task_key: str | None = None) -> list[TaskRunCreate]:
    key = task_key or f"t-{uuid.uuid4().hex[:8]}"
    return [
        TaskRunCreate(id=uuid.uuid4(), name=f"{key}-{i}", task_key=key, dynamic_key=str(i))
        for i in range(n)
    ]


def state_names(task_run_id: uuid.UUID) -> list[str]:
    with get_client(sync_client=True) as client:
        return [s.name for s in client.read_task_run_states(task_run_id)]


@pytest.mark.slow
def test_thousands_of_reports_travel_in_a_handful_of_requests(settings: Settings) -> None:
    reporter = StateReporter(settings)
    runs = creates(5000)
    reporter.create_task_runs(runs)
    for run in runs:
        reporter.report(run.id, Running())
    for run in runs:
        reporter.report(run.id, Completed())
    assert reporter.flush(120)
    assert reporter.pending() == 0
    assert reporter.requests <= 12, reporter.requests
    with get_client(sync_client=True) as client:
        stored = client.read_task_runs(task_key=runs[0].task_key, limit=10_000)
    assert len(stored) == 5000
    assert {r.state_type for r in stored} == {StateType.COMPLETED}
    assert {r.run_count for r in stored} == {1}


def test_report_does_no_io(settings: Settings) -> None:
    # a sender that stays asleep: report() only queues (its cost is measured in
    # benchmarks/engine_overhead.py, not asserted here)
    idle = settings.with_overrides(state_batch_interval=3600.0, state_batch_size=10**9)
    reporter = StateReporter(idle)
    runs = creates(2000)
    with use_settings(idle):
        reporter.create_task_runs(runs)
        for run in runs:
            reporter.report(run.id, Running())
        assert reporter.requests == 0 and reporter.pending() == 4000
        assert reporter.flush(60)
    assert reporter.pending() == 0


def test_deferred_creations_ride_with_their_first_report_or_the_flush(
    settings: Settings,
) -> None:
    idle = settings.with_overrides(state_batch_interval=3600.0, state_batch_size=10**9)
    reporter = StateReporter(idle)
    ran, never_ran = creates(3), creates(2)
    with use_settings(idle):
        reporter.create_task_runs(ran + never_ran, defer=True)
        assert reporter.pending() == 5 and reporter.requests == 0
        for run in ran:
            reporter.report(run.id, Running())
            reporter.report(run.id, Completed())
        assert reporter.pending() == 3 + 6 + 2  # 3 creations queued with their states; 2 held
        assert reporter.flush(60)
    assert reporter.pending() == 0
    assert reporter.requests == 1  # one bulk creation carried every state
    for run in ran:
        assert state_names(run.id) == ["Pending", "Running", "Completed"]
    for run in never_ran:  # released by the flush, never lost
        assert state_names(run.id) == ["Pending"]


def test_extend_collected_ships_many_runs_under_the_given_settings(settings: Settings) -> None:
    """The Ray monitor's entry point: several workers' collected reports in one
    call, queued under the snapshot passed (not the caller's), each run's held
    creation released before its first report, order kept per run."""
    idle = settings.with_overrides(state_batch_interval=3600.0, state_batch_size=10**9)
    reporter = StateReporter(idle)
    runs = creates(3)
    with use_settings(idle):
        reporter.create_task_runs(runs, defer=True)
    items: list[tuple] = []
    for run in runs:
        items += [(run.id, Running(), False), (run.id, Completed(), False)]
    reporter.extend_collected(items, idle)  # no settings in force here but the fixture's
    assert reporter.pending() == 3 + 6 and reporter.requests == 0
    with use_settings(idle):
        assert reporter.flush(60)
    assert reporter.requests == 1  # the creations carried their states
    for run in runs:
        assert state_names(run.id) == ["Pending", "Running", "Completed"]


def test_extend_collected_queues_each_held_creation_just_before_its_runs_first_item(
    settings: Settings,
) -> None:
    idle = settings.with_overrides(state_batch_interval=3600.0, state_batch_size=10**9)
    later = idle.with_overrides(log_flush_timeout=idle.log_flush_timeout + 1)  # another snapshot
    reporter = StateReporter(idle)
    a, b, c, never = creates(4)
    (d,) = creates(1)
    with use_settings(idle):
        reporter.create_task_runs([a, b, c, never], defer=True)
    a_running, b_running, a_done, d_running, b_done = (
        Running(),
        Running(),
        Completed(),
        Running(),
        Completed(),
    )
    c_running = StateReport(task_run_id=c.id, state=Running())
    c_done = StateReport(task_run_id=c.id, state=Completed())
    items: list = [
        (a.id, a_running, False),
        (b.id, b_running, False),
        c_running,
        (a.id, a_done, False),
        d,  # a creation a worker sent along (not held here)
        (d.id, d_running, False),
        (b.id, b_done, False),
        c_done,
    ]
    reporter.extend_collected(items, later)
    queued = list(reporter._shipper._queue)
    assert [(s is idle, item) for s, item in queued] == [
        (True, a),
        (False, items[0]),
        (True, b),
        (False, items[1]),
        (True, c),
        (False, c_running),
        (False, items[3]),
        (False, d),
        (False, items[5]),
        (False, items[6]),
        (False, c_done),
    ]
    assert all(s is later for s, item in queued if item not in (a, b, c))
    assert list(reporter._deferred) == [never.id]  # still held: no report of its own
    with use_settings(idle):
        assert reporter.flush(60)
    for run in (a, b, c, d):
        assert state_names(run.id) == ["Pending", "Running", "Completed"][: 2 if run is d else 3]
    assert state_names(never.id) == ["Pending"]


def test_a_flush_meanwhile_waits_for_the_creations_extend_collected_took(
    settings: Settings,
) -> None:
    # a creation taken from the held ones is queued before a concurrent flush
    # counts what it waits for: every run exists once the flush returns
    idle = settings.with_overrides(state_batch_interval=3600.0, state_batch_size=10**9)
    reporter = StateReporter(idle)
    runs = creates(600)
    with use_settings(idle):
        reporter.create_task_runs(runs, defer=True)
    started = threading.Event()

    def monitor() -> None:
        for i in range(0, len(runs), 20):
            reporter.extend_collected([(r.id, Running(), False) for r in runs[i : i + 20]], idle)
            started.set()

    thread = threading.Thread(target=monitor)
    thread.start()
    started.wait(10)
    with use_settings(idle):
        assert reporter.flush(60)
        with get_client(sync_client=True) as client:
            stored = client.read_task_runs(task_key=runs[0].task_key, limit=1000)
    thread.join(10)
    assert len(stored) == len(runs)
    with use_settings(idle):
        assert reporter.flush(60)


def test_order_is_kept_per_task_run(settings: Settings) -> None:
    reporter = StateReporter(settings)
    runs = creates(3)
    for run in runs:  # interleaved with other runs' reports, creations queued late
        reporter.create_task_run(run)
        reporter.report(run.id, Running())
    for run in runs:
        reporter.report(run.id, Completed())
    assert reporter.flush(30)
    for run in runs:
        assert state_names(run.id) == ["Pending", "Running", "Completed"]
        assert reporter.last_result(run.id) is None


def test_a_refused_transition_is_kept_for_the_engine(settings: Settings) -> None:
    reporter = StateReporter(settings)
    (run,) = creates(1)
    reporter.create_task_run(run)
    reporter.report(run.id, Running())
    reporter.report(run.id, Completed())
    reporter.report(run.id, Running())  # a finished run never runs twice
    assert reporter.flush(30)
    answer = reporter.last_result(run.id)
    assert answer is not None and answer.status == SetStateStatus.REJECT
    assert answer.state is not None and answer.state.type == StateType.COMPLETED
    assert state_names(run.id) == ["Pending", "Running", "Completed"]


def test_flush_waits_only_for_what_was_queued_before(settings: Settings) -> None:
    reporter = StateReporter(settings)
    assert reporter.flush(0.01)  # nothing queued: immediately true
    (run,) = creates(1)
    reporter.create_task_run(run)
    assert reporter.flush(30)
    assert state_names(run.id) == ["Pending"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_api_down_then_up_loses_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = _free_port()
    home = tmp_path / "home"
    server = start_api(Settings(home=home), mode="thread", port=port)
    settings = Settings(home=home, api_url=server.url, api_max_retries=1)
    server.stop()
    runs = creates(20)
    with use_settings(settings):
        reporter = StateReporter(settings)
        reporter.create_task_runs(runs)
        for run in runs:
            reporter.report(run.id, Running())
            reporter.report(run.id, Completed())
        with pytest.raises(APIUnavailable, match="60 task run reports could not be sent"):
            reporter.flush(30)
        assert reporter.pending() == 60
        server = start_api(Settings(home=home), mode="thread", port=port)
        try:
            assert reporter.flush(60)
            for run in runs:
                assert state_names(run.id) == ["Pending", "Running", "Completed"]
        finally:
            server.stop()
    err = capsys.readouterr().err
    assert "could not send 60 task run reports" in err
    assert "reachable again" in err


def test_collecting_reporter_drains_wire_objects_in_order(settings: Settings) -> None:
    collector = CollectingReporter()
    (run,) = creates(1)
    collector.create_task_run(run)
    collector.report(run.id, Running())
    collector.report(run.id, Completed())
    items = collector.drain()
    assert collector.pending() == 0 and collector.drain() == []
    assert items[0] is run
    assert [type(i) for i in items[1:]] == [StateReport, StateReport]
    assert [i.state.name for i in items[1:]] == ["Running", "Completed"]
    assert all(i.state.state_details.transition_id is not None for i in items[1:])
    driver = StateReporter(settings)  # the driver ships what the worker collected
    driver.extend(items)
    assert driver.flush(30)
    assert state_names(run.id) == ["Pending", "Running", "Completed"]


def test_collecting_reporter_flush_sends_directly(settings: Settings) -> None:
    collector = CollectingReporter()
    (run,) = creates(1)
    collector.create_task_run(run)
    collector.report(run.id, Running())
    assert collector.flush()
    assert collector.pending() == 0
    assert state_names(run.id) == ["Pending", "Running"]


def test_collecting_reporter_keeps_items_when_the_api_is_down(tmp_path: Path) -> None:
    dead = Settings(home=tmp_path, api_url=f"http://127.0.0.1:{_free_port()}", api_max_retries=0)
    collector = CollectingReporter()
    (run,) = creates(1)
    collector.create_task_run(run)
    collector.report(run.id, Running())
    with use_settings(dead), pytest.raises(APIUnavailable):
        collector.flush()
    assert collector.pending() == 2
    assert [type(i).__name__ for i in collector.drain()] == ["TaskRunCreate", "StateReport"]


def test_one_reporter_per_process() -> None:
    assert get_state_reporter() is get_state_reporter()


def test_a_run_created_and_finished_in_one_batch_travels_as_one_item(
    settings: Settings,
) -> None:
    idle = settings.with_overrides(state_batch_interval=3600.0, state_batch_size=10**9)
    reporter = StateReporter(idle)
    runs = creates(3)
    runs[2].empirical_policy.retries = 1  # a rule could intervene: reported on its own
    with use_settings(idle):
        reporter.create_task_runs(runs)
        for run in runs:
            reporter.report(run.id, Running())
            reporter.report(run.id, Completed())
        from prefray.engine.reporting import _coalesce

        queued = [item for _, item in reporter._shipper._queue]
        creations, reports, carrying = _coalesce(queued)
        assert carrying == [0, 1]
        assert [s.type for s in creations[0].states or []] == [
            StateType.RUNNING,
            StateType.COMPLETED,
        ]
        assert [r.task_run_id for r in reports] == [runs[2].id, runs[2].id]
        assert reporter.flush(30)
    assert reporter.requests == 2
    with get_client(sync_client=True) as client:
        stored = client.read_task_runs(task_key=runs[0].task_key)
    assert {(r.state_type, r.run_count) for r in stored} == {(StateType.COMPLETED, 1)}
    for run in runs:
        assert state_names(run.id) == ["Pending", "Running", "Completed"]
        assert reporter.last_result(run.id) is None


def test_carried_states_over_a_run_that_existed_leave_an_answer(settings: Settings) -> None:
    reporter = StateReporter(settings)
    (run,) = creates(1)
    reporter.create_task_run(run)
    reporter.report(run.id, Running())
    reporter.report(run.id, Completed())
    assert reporter.flush(30)
    reporter.create_task_run(run)  # a replayed creation, with a state that is refused
    reporter.report(run.id, Running())
    assert reporter.flush(30)
    answer = reporter.last_result(run.id)
    assert answer is not None and answer.status == SetStateStatus.REJECT
    assert answer.state is not None and answer.state.type == StateType.COMPLETED
    assert state_names(run.id) == ["Pending", "Running", "Completed"]


def test_a_large_batch_goes_in_parts_in_order(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parts of a few items (cut anywhere when no creation is near): each run's states
    are stored in order, whichever part carried them, and replaying the batch (the
    shipper resends it after a failure) changes nothing."""
    from prefray.engine import reporting

    monkeypatch.setattr(reporting, "_PIPELINE_ITEMS", 4)
    idle = settings.with_overrides(state_batch_interval=3600.0, state_batch_size=10**9)
    reporter = StateReporter(idle)
    runs = creates(12)
    runs[5].empirical_policy.retries = 1  # reported on its own, not carried
    with use_settings(idle):
        reporter.create_task_runs(runs[:6])
        for run in runs[:6]:  # creations first, then their states: parts split them
            reporter.report(run.id, Running())
        for run in runs[6:]:  # a run's creation and states together
            reporter.create_task_run(run)
            reporter.report(run.id, Running())
            reporter.report(run.id, Completed())
        for run in runs[:6]:
            reporter.report(run.id, Completed())
        queued = [item for _, item in reporter._shipper._queue]
        assert reporter.flush(30)
        assert reporter.requests > 4  # it was sent in parts
        answers = reporting._Answers()
        reporting._send_pipelined(idle, queued, answers, 5)  # the whole batch again
    for run in runs:
        assert state_names(run.id) == ["Pending", "Running", "Completed"]
        assert reporter.last_result(run.id) is None
        assert answers.get(run.id) is None


_EXIT_SCRIPT = """
import sys, uuid
from prefray.engine.reporting import StateReporter
from prefray.schemas import TaskRunCreate
from prefray.settings import Settings, use_settings
from prefray.states import Completed, Running

settings = Settings(api_url=sys.argv[1], state_batch_interval=3600.0, state_batch_size=10**9)
with use_settings(settings):
    reporter = StateReporter(settings)
    for i in range(int(sys.argv[3])):
        run = TaskRunCreate(id=uuid.uuid4(), name=f"x-{i}", task_key=sys.argv[2],
                            dynamic_key=str(i))
        reporter.create_task_run(run)
        reporter.report(run.id, Running())
        reporter.report(run.id, Completed())
"""


def test_a_large_batch_queued_at_exit_is_sent(embedded_api: EmbeddedAPI, tmp_path: Path) -> None:
    """The exit flush sends a batch large enough to go in parts (no helper thread can
    start while the interpreter exits: the parts are coalesced in the sender)."""
    import subprocess
    import sys

    from prefray.engine.reporting import _PIPELINE_ITEMS

    runs = _PIPELINE_ITEMS // 3 + 500
    key = f"exit-{uuid.uuid4().hex[:8]}"
    script = tmp_path / "exit_flush.py"
    script.write_text(_EXIT_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), embedded_api.url, key, str(runs)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "lost" not in done.stderr, done.stderr
    settings = Settings(home=tmp_path, api_url=embedded_api.url)
    with use_settings(settings), get_client(sync_client=True) as client:
        stored = client.read_task_runs(task_key=key, limit=10_000)
    assert len(stored) == runs
    assert {r.state_type for r in stored} == {StateType.COMPLETED}
