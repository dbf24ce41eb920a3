"""RayTaskRunner on a real local Ray cluster (the session's `ray_local`), against
the real API over HTTP. Tests that need their own cluster (ray://, several
nodes) are in test_ray_clusters.py."""

from __future__ import annotations

import asyncio
import os
import pickle
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from ray_fixtures import ray_local  # noqa: F401 - the session's local cluster

from prefray import allow_failure, flow, get_run_logger, task
from prefray.client import get_client
from prefray.exceptions import ConfigurationError, SerializationError
from prefray.settings import Settings, temporary_settings
from task_runners import RayTaskRunner, remote_options

pytestmark = [pytest.mark.ray, pytest.mark.timeout(120), pytest.mark.usefixtures("ray_local")]


def task_runs(flow_run_id: Any) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_id=flow_run_id, limit=5000)


@task
def double(x: int) -> int:
    return 2 * x


@task
def where() -> int:
    return os.getpid()


def test_map_of_1000_recorded_with_final_states_and_names(api: Settings) -> None:
    @flow(task_runner=RayTaskRunner())
    def mapped() -> list[int]:
        return [f.result() for f in double.map(range(1000))]

    state = mapped(return_state=True)
    assert state.result() == [2 * i for i in range(1000)]
    runs = task_runs(state.state_details.flow_run_id)
    assert len(runs) == 1000
    assert {r.name for r in runs} == {f"double-{i}" for i in range(1000)}
    assert all(r.state.is_completed() and r.run_count == 1 for r in runs)


def test_tasks_run_in_worker_processes(api: Settings) -> None:
    @flow(task_runner=RayTaskRunner())
    def pids() -> list[int]:
        return [f.result() for f in [where.submit() for _ in range(4)]]

    assert os.getpid() not in pids()


def test_logs_from_workers_reach_the_api_with_their_task_run(api: Settings) -> None:
    @task
    def chatty(x: int) -> int:
        get_run_logger().warning("hello from worker %s, item %s", os.getpid(), x)
        return x

    @flow(task_runner=RayTaskRunner())
    def logging_flow() -> None:
        chatty.map(range(3))

    state = logging_flow(return_state=True)
    runs = {r.name: r for r in task_runs(state.state_details.flow_run_id)}
    with get_client(sync_client=True) as client:
        for i in range(3):
            logs = client.read_logs(task_run_id=runs[f"chatty-{i}"].id)
            hellos = [log for log in logs if "hello from worker" in log.message]
            assert len(hellos) == 1 and hellos[0].message.endswith(f"item {i}"), logs
            assert f"worker {os.getpid()}," not in hellos[0].message


class Odd(ValueError):
    pass


def test_failure_reraises_original_exception_with_worker_traceback(api: Settings) -> None:
    @task
    def picky(x: int) -> int:
        raise Odd(f"{x} is odd")

    @flow(task_runner=RayTaskRunner())
    def failing() -> Any:
        return picky.submit(3).result()

    with pytest.raises(Odd, match="3 is odd") as info:
        failing()
    remote = str(info.value.__cause__)  # the worker's traceback
    assert "in picky" in remote and "Odd: 3 is odd" in remote


def test_nested_futures_and_upstream_failure(api: Settings) -> None:
    @task
    def total(values: list[int], extra: dict[str, int]) -> int:
        return sum(values) + sum(extra.values())

    @task
    def broken() -> int:
        raise RuntimeError("upstream broke")

    @task
    def survivor(value: Any) -> str:
        return type(value).__name__

    @flow(task_runner=RayTaskRunner())
    def nested() -> tuple[Any, ...]:
        a, b = double.submit(1), double.submit(2)
        good = total.submit([a, b], {"c": double.submit(3)})
        bad = broken.submit()
        downstream = total.submit([bad], {})
        tolerant = survivor.submit(allow_failure(bad))
        return good.result(), downstream.wait(), tolerant.result(), bad.wait()

    good, downstream, tolerant, _ = nested(return_state=True).result(raise_on_failure=False)
    assert good == 12
    assert downstream.is_pending() and downstream.name == "NotReady"
    assert tolerant == "RuntimeError"


def test_data_stays_in_object_store_driver_memory_flat(api: Settings) -> None:
    """A 200 MB array made by one task and read by four: the driver never holds it."""
    import psutil

    @task
    def make() -> Any:
        import numpy as np

        return np.ones(200 * 2**20 // 8)

    @task
    def reduce(array: Any) -> float:
        return float(array[::1000].sum())

    peak = [0]
    stop = threading.Event()
    proc = psutil.Process()

    def sample() -> None:
        while not stop.wait(0.005):
            peak[0] = max(peak[0], proc.memory_info().rss)

    @flow(task_runner=RayTaskRunner())
    def data_flow() -> list[float]:
        array = make.submit()
        return [f.result() for f in [reduce.submit(array) for _ in range(4)]]

    baseline = proc.memory_info().rss
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = data_flow()
    finally:
        stop.set()
        sampler.join()
    assert result == [float(len(range(0, 200 * 2**20 // 8, 1000)))] * 4
    growth_mb = (peak[0] - baseline) / 2**20
    assert growth_mb < 60, f"driver grew by {growth_mb:.0f} MB"


def test_async_tasks_on_ray(api: Settings) -> None:
    @task
    async def slow_double(x: int) -> int:
        await asyncio.sleep(0.01)
        return 2 * x

    @flow(task_runner=RayTaskRunner())
    async def async_flow() -> list[int]:
        futures = await slow_double.map(range(4))
        return [await f.result() for f in futures]

    assert asyncio.run(async_flow()) == [0, 2, 4, 6]


def test_subflow_with_its_own_ray_runner_reuses_the_connection(api: Settings) -> None:
    import ray

    @flow(task_runner=RayTaskRunner())
    def child(x: int) -> int:
        return double.submit(x).result()

    @flow(task_runner=RayTaskRunner())
    def parent() -> int:
        return child(double.submit(5).result())

    assert parent() == 20
    assert ray.is_initialized()  # neither runner started Ray, so neither shut it down


def test_worker_death_is_crashed_then_retried_to_completed(api: Settings, tmp_path: Path) -> None:
    marker = tmp_path / "died-once"

    @task(retries=1, retry_delay_seconds=0)
    def dies_once() -> str:
        if not marker.exists():
            marker.write_text("x")
            os._exit(1)  # the worker process dies: no state report from it
        return "second time lucky"

    @task
    def always_dies() -> None:
        os._exit(1)

    seen: dict[str, Any] = {}

    @flow(task_runner=RayTaskRunner())
    def fragile() -> None:
        seen["lucky"], seen["dead"] = dies_once.submit(), always_dies.submit()

    flow_state = fragile(return_state=True)
    assert flow_state.is_failed()
    lucky, dead = seen["lucky"].wait(), seen["dead"].wait()
    assert lucky.is_completed() and lucky.result() == "second time lucky"
    assert dead.is_crashed() and "died" in dead.message.lower()
    runs = {r.name.split("-")[0]: r for r in task_runs(flow_state.state_details.flow_run_id)}
    assert runs["always_dies"].state.is_crashed()
    with get_client(sync_client=True) as client:
        history = client.read_task_run_states(runs["dies_once"].id)
    names = [s.name for s in history]
    assert names[-1] == "Completed" and "AwaitingRetry" in names, names
    retry = next(s for s in history if s.name == "AwaitingRetry")
    assert "Ray could not run this task run" in (retry.message or "")


def test_downstream_of_a_crashed_upstream_is_not_ready(api: Settings) -> None:
    @task
    def dies() -> int:
        os._exit(1)

    seen: dict[str, Any] = {}

    @flow(task_runner=RayTaskRunner())
    def chain() -> None:
        seen["downstream"] = double.submit(dies.submit())

    state = chain(return_state=True)
    assert state.is_failed()
    assert seen["downstream"].wait().name == "NotReady"
    runs = {r.name.split("-")[0]: r.state for r in task_runs(state.state_details.flow_run_id)}
    assert runs["dies"].is_crashed() and runs["double"].name == "NotReady"


def test_custom_resource_and_num_cpus_reach_ray(api: Settings) -> None:
    import ray

    @task
    def cpus() -> float:
        return ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)

    @remote_options(num_cpus=2)
    @task
    def two_cpus() -> float:
        return ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)

    @flow(task_runner=RayTaskRunner(remote_options={"num_cpus": 0.5}))
    def placed() -> tuple[float, float, float]:
        with remote_options(num_cpus=3):
            three = cpus.submit()
        return cpus.submit().result(), two_cpus.submit().result(), three.result()

    assert placed() == (0.5, 2.0, 3.0)


def test_reserved_ray_options_are_refused() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        remote_options(max_retries=3)
    with pytest.raises(ValueError, match="num_returns"):
        RayTaskRunner(remote_options={"num_returns": 1})


def test_timeout_ends_timed_out_and_frees_the_worker(api: Settings) -> None:
    @task(timeout_seconds=0.5)
    def sleepy() -> None:
        for _ in range(100):
            time.sleep(0.05)

    @flow(task_runner=RayTaskRunner())
    def timing_out() -> Any:
        start = time.monotonic()
        state = sleepy.submit().wait()
        return state, time.monotonic() - start

    state, elapsed = timing_out(return_state=True).result(raise_on_failure=False)
    assert state.is_failed() and state.name == "TimedOut"
    assert elapsed < 4


def test_unpicklable_argument_names_task_and_parameter(api: Settings) -> None:
    @task
    def takes(lock: Any) -> None:
        return None

    @flow(task_runner=RayTaskRunner())
    def bad_input() -> None:
        takes.submit(threading.Lock())

    with pytest.raises(SerializationError, match=r"Task 'takes': parameter 'lock'"):
        bad_input()


def test_probe_failure_names_the_url_and_the_fix(api: Settings) -> None:
    from ray_fixtures import free_port

    url = f"http://127.0.0.1:{free_port()}/api"
    runner = RayTaskRunner()
    from prefray.engine.call import TaskRunCall
    from prefray.schemas import TaskRun

    call = TaskRunCall(
        task=double,
        task_run=TaskRun.model_construct(id=__import__("uuid").uuid4(), name="x"),
        parameters={"x": 1},
        settings=api.with_overrides(api_url=url),
    )
    with runner.start(), pytest.raises(ConfigurationError) as info:
        runner.submit(call)
    message = str(info.value)
    assert url in message and "prefray server start --host 0.0.0.0" in message
    assert "PREFRAY_API_URL" in message


def test_cancel_all_cancels_outstanding_ray_tasks(api: Settings) -> None:
    @task
    def forever() -> None:
        time.sleep(60)

    @flow(task_runner=RayTaskRunner(), timeout_seconds=1)
    def impatient() -> None:
        forever.submit().wait()

    start = time.monotonic()
    state = impatient(return_state=True)
    assert state.is_failed() and state.name == "TimedOut"
    assert time.monotonic() - start < 20
    runs = task_runs(state.state_details.flow_run_id)
    assert [r.state.type.value for r in runs] == ["CANCELLED"]


def test_runner_pickles_unstarted_and_duplicates() -> None:
    runner = RayTaskRunner(
        address="auto", init_kwargs={"num_cpus": 1}, remote_options={"num_cpus": 1}
    )
    copy = pickle.loads(pickle.dumps(runner))
    assert copy._config() == runner._config() == runner.duplicate()._config()
    assert copy._monitor is None


def test_worker_states_decode_as_validation_would_build_them() -> None:
    # the monitor builds decoded states without validation: same fields, same
    # fields-set, same private attributes; the final state is the last report's object
    import uuid

    from prefray.states import Completed, Failed, ResultReference, Running, State
    from task_runners.ray.futures import RayState
    from task_runners.ray.payload import decode_result, decode_state, encode_result, encode_state

    failed = Failed(message="boom")
    failed.state_details.retriable = False
    persisted = Completed(data=ResultReference(storage_key="k"))
    for original in (Running(), Completed(message="done"), failed, persisted):
        for cls in (State, RayState):
            decoded = decode_state(encode_state(original), cls)
            validated = cls(**{name: getattr(original, name) for name in State.model_fields})
            assert type(decoded) is cls
            assert decoded.model_dump() == validated.model_dump() == original.model_dump()
            assert decoded.model_fields_set == validated.model_fields_set
            assert decoded.__pydantic_private__ == validated.__pydantic_private__
            details = decoded.state_details
            assert details.model_fields_set == validated.state_details.model_fields_set
    run_id = uuid.uuid4()
    running, completed = Running(), Completed()
    final, reports, value = decode_result(
        encode_result(completed, [(run_id, running, False), (run_id, completed, False)], None, [3]),
        RayState,
    )
    assert [(r[0], r[1].name) for r in reports] == [(run_id, "Running"), (run_id, "Completed")]
    assert reports[1][1] is final and type(final) is RayState and final.id == completed.id
    assert value == [3]


def test_bad_constructor_arguments() -> None:
    with pytest.raises(TypeError, match="address"):
        RayTaskRunner(address=10001)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="address"):
        RayTaskRunner(init_kwargs={"address": "auto"})


def test_settings_snapshot_travels(api: Settings) -> None:
    @task
    def level() -> str:
        from prefray.settings import get_current_settings

        return get_current_settings().logging_level

    @flow(task_runner=RayTaskRunner())
    def snap() -> str:
        return level.submit().result()

    with temporary_settings(logging_level="DEBUG"):
        assert snap() == "DEBUG"


@task
def linger(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.mark.slow
def test_a_run_that_ends_out_of_order_is_seen_beyond_the_watch_window(
    api: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # with many runs watched, ray.wait looks at the oldest WINDOW and a rotating
    # slice of the rest: a quick run behind slow ones must not wait for them
    from task_runners.ray import monitor

    monkeypatch.setattr(monitor, "WINDOW", 2)

    @flow(task_runner=RayTaskRunner())
    def out_of_order() -> tuple[Any, float]:
        with remote_options(num_cpus=0):
            slow = [linger.submit(12.0) for _ in range(6)]
            quick = linger.submit(0.0)
        # generous: seven fresh workers may take seconds to start on a busy
        # 2-core machine, but the quick run must be seen long before the slow end
        seen = quick.wait(timeout=9.0)
        return seen, sum(f.result() for f in slow)

    seen, total = out_of_order()
    assert seen is not None and seen.is_completed()
    assert total == 72.0
