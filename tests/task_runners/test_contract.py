"""The task-runner contract: every runner in conftest.RUNNERS must pass this,
with sync and async task functions, against the real API over HTTP."""

from __future__ import annotations

import pickle
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from prefray import allow_failure, flow, quote, task, unmapped
from prefray.client import get_client
from prefray.exceptions import TaskRunnerError
from prefray.states import State
from task_runners import SequentialTaskRunner

pytestmark = pytest.mark.timeout(60)


def _task_states(flow_run_id: Any) -> dict[str, State]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_id=flow_run_id)
    return {run.name: run.state for run in runs}


def test_canary_file_shows_concurrency(runner: Any, as_task_fn: Any, tmp_path: Path) -> None:
    canary = tmp_path / "canary"

    def slow() -> None:
        time.sleep(0.6)
        canary.write_text("foo")

    def fast() -> None:
        canary.write_text("bar")

    slow_task, fast_task = task(as_task_fn(slow)), task(as_task_fn(fast))

    @flow(task_runner=runner)
    def canary_flow() -> None:
        slow_task.submit()
        time.sleep(0.1)  # the slow one has started wherever it runs
        fast_task.submit()

    canary_flow()
    expected = "bar" if isinstance(runner, SequentialTaskRunner) else "foo"
    assert canary.read_text() == expected


def test_results_and_states_recorded(runner: Any, as_task_fn: Any) -> None:
    def double(x: int) -> int:
        return 2 * x

    double_task = task(as_task_fn(double), task_run_name="double-{x}")

    @flow(task_runner=runner)
    def doubling() -> tuple[list[int], State]:
        futures = double_task.map(range(5))
        return [f.result() for f in futures], futures[0].get_state()

    state = doubling(return_state=True)
    values, first = state.result()
    assert values == [0, 2, 4, 6, 8]
    assert first.is_completed()
    recorded = _task_states(state.state_details.flow_run_id)
    assert sorted(recorded) == [f"double-{i}" for i in range(5)]
    assert all(s.type.value == "COMPLETED" for s in recorded.values())


def test_failing_upstream_makes_downstream_not_ready(runner: Any, as_task_fn: Any) -> None:
    def boom() -> int:
        raise ValueError("upstream broke")

    def plus_one(x: int) -> int:
        return x + 1

    def independent() -> str:
        return "fine"

    boom_t, plus_t, ind_t = task(as_task_fn(boom)), task(as_task_fn(plus_one)), task(independent)

    @flow(task_runner=runner)
    def chain() -> dict[str, State]:
        up = boom_t.submit()
        down = plus_t.submit(up)
        other = ind_t.submit()
        # a dict of states is a value; a list of states would decide the flow's state
        return {"up": up.wait(), "down": down.wait(), "other": other.wait()}

    up, down, other = chain().values()
    assert up.is_failed() and isinstance(up.exception, ValueError)
    assert down.is_pending() and down.name == "NotReady"
    assert other.is_completed() and other.result() == "fine"


def test_allow_failure_lets_downstream_run(runner: Any, as_task_fn: Any) -> None:
    def boom() -> int:
        raise ValueError("nope")

    def describe(x: Any) -> str:
        return f"got {type(x).__name__}"

    boom_t, describe_t = task(as_task_fn(boom)), task(as_task_fn(describe))

    @flow(task_runner=runner)
    def tolerant() -> str:
        up = boom_t.submit()
        return describe_t.submit(allow_failure(up)).result()

    assert tolerant() == "got ValueError"


def test_wait_for_failure_blocks_downstream(runner: Any) -> None:
    @task
    def boom() -> None:
        raise RuntimeError("x")

    @task
    def after() -> int:
        return 1

    @flow(task_runner=runner)
    def ordered() -> dict[str, State]:
        return {"after": after.submit(wait_for=[boom.submit()]).wait()}

    assert ordered()["after"].name == "NotReady"


def test_quote_passes_value_unexamined(runner: Any) -> None:
    @task
    def first() -> int:
        return 1

    @task
    def echo(value: Any) -> Any:
        return value

    @flow(task_runner=runner)
    def quoting() -> str:
        upstream = first.submit()
        echoed = echo.submit(quote([upstream])).result()
        return type(echoed[0]).__name__

    assert quoting().endswith("Future")


def test_timeout_fails_only_the_slow_task(runner: Any, as_task_fn: Any) -> None:
    def sleepy() -> str:
        time.sleep(3)
        return "late"

    def quick() -> str:
        return "quick"

    def after(x: str) -> str:
        return x

    sleepy_t = task(as_task_fn(sleepy), timeout_seconds=0.3)
    quick_t, after_t = task(quick), task(after)

    @flow(task_runner=runner)
    def timed() -> dict[str, Any]:
        start = time.monotonic()
        slow = sleepy_t.submit()
        fast = quick_t.submit()
        dependent = after_t.submit(slow)
        states = {"slow": slow.wait(), "fast": fast.wait(), "dependent": dependent.wait()}
        return {**states, "elapsed": time.monotonic() - start}

    slow, fast, dependent, elapsed = timed().values()
    assert slow.is_failed() and slow.name == "TimedOut"
    assert fast.is_completed()
    assert dependent.name == "NotReady"
    assert elapsed < 2.5  # the engine stopped waiting


def test_crash_is_captured_and_recorded(runner: Any) -> None:
    @task
    def dies() -> None:
        raise SystemExit(3)

    @flow(task_runner=runner)
    def crashing() -> None:
        dies.submit()

    if isinstance(runner, SequentialTaskRunner):
        # on the flow's own thread the interrupt propagates, after it is recorded
        with pytest.raises(SystemExit):
            crashing()
        with get_client(sync_client=True) as client:
            run = client.read_flow_runs(flow_name="crashing", limit=1)[0]
        assert run.state.type.value == "CRASHED"
        task_state = next(iter(_task_states(run.id).values()))
        assert task_state.type.value == "CRASHED"
    else:
        state = crashing(return_state=True)
        assert state.is_failed()
        task_state = next(iter(_task_states(state.state_details.flow_run_id).values()))
        assert task_state.type.value == "CRASHED"


def test_map_with_unmapped_and_nested_futures(runner: Any, as_task_fn: Any) -> None:
    def add(x: int, y: int) -> int:
        return x + y

    def total(parts: dict[str, list[int]]) -> int:
        return sum(parts["values"])

    add_t, total_t = task(as_task_fn(add)), task(as_task_fn(total))

    @flow(task_runner=runner)
    def mapped() -> int:
        futures = add_t.map([1, 2, 3], unmapped(10))
        return total_t.submit({"values": futures}).result()

    assert mapped() == 36


def test_started_runner_pickles_as_unstarted(runner: Any) -> None:
    with runner.start():
        for dumps in (pickle.dumps, cloudpickle.dumps):
            copy = pickle.loads(dumps(runner))
            assert type(copy) is type(runner)
            with copy.start():
                pass
    with runner.start():
        with pytest.raises(TaskRunnerError, match="already started"):
            with runner.start():
                pass


def test_duplicate_is_an_unstarted_copy(runner: Any) -> None:
    copy = runner.duplicate()
    assert copy is not runner and type(copy) is type(runner)
    with runner.start(), copy.start():
        pass
