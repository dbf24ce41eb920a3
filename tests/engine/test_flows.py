"""Flow runs end to end against the real API: calling conventions, the four
sync/async combinations, subflows, final-state rules, parameters, timeouts,
retries, hooks, crashes, and what the API records."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest

from prefray import flow, get_run_logger, tags, task
from prefray.client import get_client
from prefray.exceptions import ReservedArgumentError
from prefray.states import State
from task_runners import SequentialTaskRunner

pytestmark = [pytest.mark.usefixtures("api"), pytest.mark.timeout(60)]


def _flow_run(state: State) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id)


def _task_runs(flow_run_id: Any) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_id=flow_run_id)


@task
def double(x: int) -> int:
    return 2 * x


@task
async def adouble(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


def test_sync_flow_sync_and_async_tasks() -> None:
    @flow
    def mixed(n: int) -> list[int]:
        a = double(n)
        b = adouble(n)  # an async task in a sync flow runs and returns its value
        c = double.submit(a).result()
        d = [f.result() for f in adouble.map([1, 2])]
        return [a, b, c, *d]

    state = mixed(3, return_state=True)
    assert state.result() == [6, 6, 12, 2, 4]
    run = _flow_run(state)
    assert run.state.type.value == "COMPLETED" and run.parameters == {"n": 3}
    assert len(_task_runs(run.id)) == 5


def test_async_flow_returns_coroutine_and_awaits_async_tasks() -> None:
    @flow
    async def amixed(n: int) -> list[int]:
        a = await adouble(n)
        b = double(n)  # a sync task in an async flow returns its value
        future = await adouble.submit(a)
        c = await future.result()
        futures = await adouble.map([1, 2])
        d = [await f.result() for f in futures]
        return [a, b, c, *d]

    coro = amixed(3)
    assert asyncio.iscoroutine(coro)
    assert asyncio.run(coro) == [6, 6, 12, 2, 4]


def test_flow_returning_none_fails_when_a_task_failed() -> None:
    @task
    def boom() -> None:
        raise ValueError("bad")

    @flow
    def quiet() -> None:
        double.submit(1)
        boom.submit()

    state = quiet(return_state=True)
    assert state.is_failed() and "1/2 states failed" in state.message
    with pytest.raises(ValueError, match="bad"):
        quiet()
    assert _flow_run(state).state.type.value == "FAILED"


def test_flow_value_wins_over_failed_tasks_and_returned_state_is_used() -> None:
    @task
    def boom() -> None:
        raise ValueError("bad")

    @flow
    def returns_value() -> int:
        boom.submit()
        return 1

    @flow
    def returns_state() -> State:
        return boom(return_state=True)

    assert returns_value() == 1
    assert returns_state(return_state=True).is_failed()


def test_flow_exception_fails_the_run_and_raises() -> None:
    @flow
    def raiser() -> None:
        raise KeyError("missing")

    state = raiser(return_state=True)
    assert state.is_failed() and "KeyError" in state.message
    with pytest.raises(KeyError):
        raiser()


def test_subflows_sync_and_async_record_parent_task_run() -> None:
    @flow
    def child(x: int) -> int:
        return double(x)

    @flow
    async def achild(x: int) -> int:
        return await adouble(x)

    @flow
    def parent() -> int:
        return child(1) + asyncio.run(achild(2))

    state = parent(return_state=True)
    assert state.result() == 6
    parent_run = _flow_run(state)
    names = {r.name.split("-")[0]: r for r in _task_runs(parent_run.id)}
    assert "child" in names
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(parent_task_run_id=names["child"].id)
    assert len(children) == 1 and children[0].flow_name == "child"


def test_retried_flow_does_not_rerun_completed_work() -> None:
    calls = {"task": 0, "child": 0, "body": 0}

    @task
    def counted() -> int:
        calls["task"] += 1
        return 1

    @flow
    def child() -> int:
        calls["child"] += 1
        return 2

    @flow(retries=1)
    def flaky() -> int:
        calls["body"] += 1
        total = counted() + child()
        if calls["body"] == 1:
            raise RuntimeError("first attempt fails")
        return total

    assert flaky() == 3
    assert calls == {"task": 1, "child": 1, "body": 2}


def test_parameters_are_validated_and_coerced() -> None:
    @flow
    def typed(n: int) -> int:
        return n + 1

    assert typed("5") == 6
    state = typed("five", return_state=True)
    assert state.is_failed() and "n" in state.message
    assert _flow_run(state).state.type.value == "FAILED"


def test_unserializable_parameter_is_stored_as_placeholder() -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "Opaque()"

    @flow(validate_parameters=False)
    def takes(obj: Any) -> str:
        return repr(obj)

    state = takes(Opaque(), return_state=True)
    assert state.result() == "Opaque()"
    assert _flow_run(state).parameters == {"obj": "<unserializable: Opaque()>"}


def test_flow_timeout_ends_timed_out() -> None:
    @flow(timeout_seconds=0.3)
    def slow() -> None:
        time.sleep(2)

    start = time.monotonic()
    state = slow(return_state=True)
    assert time.monotonic() - start < 1.5
    assert state.is_failed() and state.name == "TimedOut"
    assert _flow_run(state).state.name == "TimedOut"


def test_task_retries_through_the_server() -> None:
    attempts: list[int] = []
    refused: list[int] = []

    @task(retries=2, retry_delay_seconds=0)
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("again")
        return "ok"

    @task(retries=3, retry_condition_fn=lambda task, run, state: False)
    def never_retried() -> None:
        refused.append(1)
        raise RuntimeError("no")

    @flow
    def retrying() -> str:
        never_retried.submit().wait()
        return flaky()

    state = retrying(return_state=True)
    assert state.result() == "ok" and len(attempts) == 3 and len(refused) == 1
    runs = {r.name.split("-")[0]: r for r in _task_runs(state.state_details.flow_run_id)}
    assert runs["flaky"].run_count == 3 and runs["flaky"].state.type.value == "COMPLETED"
    assert runs["never_retried"].run_count == 1


def test_hooks_run_and_names_and_tags_recorded() -> None:
    seen: list[str] = []

    @task(on_completion=[lambda t, r, s: seen.append(f"task {s.type.value}")])
    def hooked() -> int:
        return 1

    @flow(
        flow_run_name="run-{n}",
        tags=["nightly"],
        on_running=[lambda f, r, s: seen.append("running")],
        on_completion=[lambda f, r, s: seen.append("completed")],
    )
    def named(n: int) -> int:
        with tags("inner"):
            return hooked.with_options(task_run_name=f"hooked-{n}")()

    state = named(7, return_state=True)
    run = _flow_run(state)
    assert run.name == "run-7" and "nightly" in run.tags
    task_run = _task_runs(run.id)[0]
    assert task_run.name == "hooked-7" and {"inner", "nightly"} <= set(task_run.tags)
    assert seen == ["running", "task COMPLETED", "completed"]


def test_logs_and_prints_are_recorded() -> None:
    @task(log_prints=True)
    def chatty() -> None:
        print("hello from print")
        get_run_logger().warning("careful")

    @flow
    def logged() -> None:
        get_run_logger().info("flow says hi")
        chatty()

    state = logged(return_state=True)
    with get_client(sync_client=True) as client:
        messages = [log.message for log in client.read_logs(flow_run_id=_flow_run(state).id)]
    assert "flow says hi" in messages
    assert "hello from print" in messages and "careful" in messages


def test_keyboard_interrupt_crashes_the_flow_before_propagating() -> None:
    @flow(task_runner=SequentialTaskRunner())
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    with get_client(sync_client=True) as client:
        run = client.read_flow_runs(flow_name="interrupted", limit=1)[0]
    assert run.state.type.value == "CRASHED"


@pytest.mark.slow
def test_sigterm_of_driver_crashes_the_flow(api: Any, tmp_path: Any) -> None:
    script = tmp_path / "term.py"
    script.write_text(
        textwrap.dedent(
            """
            import time
            from prefray import flow

            @flow
            def terminated():
                print("started", flush=True)
                time.sleep(30)

            terminated()
            """
        )
    )
    env = {**os.environ, "PREFRAY_API_URL": api.api_url}
    proc = subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and "started" in proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    with get_client(sync_client=True) as client:
        run = client.read_flow_runs(flow_name="terminated", limit=1)[0]
    assert run.state.type.value == "CRASHED"


def test_bad_decorator_arguments_raise_at_decoration() -> None:
    def fn() -> None: ...

    with pytest.raises(ValueError, match="retries"):
        flow(retries=-1)(fn)
    with pytest.raises(ValueError, match="50 retry delays"):
        task(retries=60, retry_delay_seconds=[1] * 51)(fn)
    with pytest.raises(TypeError, match="on_failure"):
        task(on_failure=[1])(fn)
    with pytest.raises(TypeError, match="task_runner"):
        flow(task_runner="threads")(fn)
    with pytest.raises(ValueError, match="timeout_seconds"):
        task(timeout_seconds=-1)(fn)

    def reserved(wait_for: int) -> None: ...

    with pytest.raises(ReservedArgumentError, match="wait_for"):
        task(reserved)


def test_with_options_and_run_name_templates_refuse_unknown_names() -> None:
    def fn(n: int) -> int:
        return n

    named_flow = flow(flow_run_name="run-{m}")(fn)
    named_task = task(task_run_name="item-{m}")(fn)
    with pytest.raises(TypeError, match=r"unknown options: \['retry'\]"):
        named_flow.with_options(retry=1)
    with pytest.raises(TypeError, match=r"unknown options: \['retry'\]"):
        named_task.with_options(retry=1)
    assert named_task.with_options(retries=2).retries == 2
    with pytest.raises(ValueError, match="flow_run_name 'run-{m}' of flow 'fn' refers to 'm'"):
        named_flow.run_name({"n": 1})
    with pytest.raises(ValueError, match="task_run_name 'item-{m}' of task 'fn' refers to 'm'"):
        named_task.run_name({"n": 1}, "0")
    assert named_flow.with_options(flow_run_name="run-{n}").run_name({"n": 1}) == "run-1"
    assert named_task.with_options(task_run_name=lambda: "x").run_name({"n": 1}, "0") == "x"


def test_flow_in_a_thread_without_sigterm_handling() -> None:
    @flow
    def threaded() -> int:
        return double(2)

    results: list[int] = []
    thread = threading.Thread(target=lambda: results.append(threaded()))
    thread.start()
    thread.join(30)
    assert results == [4]
