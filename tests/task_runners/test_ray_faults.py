"""RayTaskRunner: retries after a worker crash, hard timeouts, persisted flow
results from Ray futures (real local cluster, real API over HTTP)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from ray_fixtures import ray_local  # noqa: F401 - the session's local cluster

from prefray import flow, task
from prefray.client import get_client
from prefray.results import load_result
from prefray.settings import Settings
from prefray.testing import prefray_test_harness
from task_runners import RayTaskRunner

pytestmark = [pytest.mark.ray, pytest.mark.timeout(120), pytest.mark.usefixtures("ray_local")]


@pytest.fixture(scope="module")
def api() -> Any:
    with prefray_test_harness() as settings:
        yield settings


def history(task_run_id: Any) -> list[str]:
    with get_client(sync_client=True) as client:
        return [s.name for s in client.read_task_run_states(task_run_id)]


def test_retry_after_a_crash_is_proposed_and_counts_the_crashed_attempt(
    api: Settings, tmp_path: Path
) -> None:
    """retries=1: the first attempt's worker dies, the second raises. Two attempts
    in all: the resubmitted one proposes Retrying and knows it is the last."""
    attempts = tmp_path / "attempts"
    attempts.mkdir()

    @task(retries=1, retry_delay_seconds=0)
    def dies_then_fails() -> None:
        (attempts / str(time.monotonic_ns())).touch()
        if len(list(attempts.iterdir())) == 1:
            os._exit(1)
        raise ValueError("second attempt fails")

    seen: dict[str, Any] = {}

    @flow(task_runner=RayTaskRunner())
    def fragile() -> None:
        seen["future"] = dies_then_fails.submit()

    assert fragile(return_state=True).is_failed()
    final = seen["future"].wait()
    assert final.is_failed() and "second attempt fails" in (final.message or "")
    assert len(list(attempts.iterdir())) == 2
    names = history(seen["future"].task_run_id)
    assert names[-1] == "Failed", names
    assert "AwaitingRetry" in names and "Retrying" in names, names


@pytest.mark.slow
def test_hard_timeout_stops_a_worker_stuck_in_c_code(api: Settings) -> None:
    """A regular expression that backtracks for ages holds the GIL: the worker
    cannot even return. Its kernel deadline ends it; the run is TimedOut."""

    @task(timeout_seconds=0.5)
    def backtrack() -> Any:
        return re.match(r"(a+)+$", "a" * 60 + "b")

    @task
    def after() -> str:
        return "the cluster goes on"

    @flow(task_runner=RayTaskRunner())
    def stuck() -> Any:
        start = time.monotonic()
        state = backtrack.submit().wait()
        return state, time.monotonic() - start, after.submit().result()

    flow_state = stuck(return_state=True)
    state, elapsed, later = flow_state.result(raise_on_failure=False)
    assert state.is_failed() and state.name == "TimedOut", state
    assert elapsed < 15
    assert later == "the cluster goes on"
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_id=flow_state.state_details.flow_run_id)
    recorded = {r.name.split("-")[0]: r.state for r in runs}
    assert recorded["backtrack"].name == "TimedOut" and recorded["backtrack"].is_failed()


def test_flow_persists_the_value_of_a_returned_ray_future(api: Settings) -> None:
    @task
    def make() -> list[int]:
        return [1, 2, 3]

    @flow(task_runner=RayTaskRunner(), persist_result=True)
    def returns_future() -> Any:
        return make.submit()

    state = returns_future(return_state=True)
    assert state.result() == [1, 2, 3]
    with get_client(sync_client=True) as client:
        recorded = client.read_flow_run(state.state_details.flow_run_id).state
    assert recorded.data is not None
    assert load_result(recorded.data) == [1, 2, 3]
