"""Task features end to end against the real API: caching, persisted results,
mapping rules and errors, nested futures, tasks outside flows, futures."""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import sys
import time
from typing import Any

import pydantic
import pytest

from prefray import flow, task, unmapped
from prefray.client import get_client
from prefray.exceptions import MappingLengthMismatch, MappingMissingIterable
from prefray.futures import as_completed, wait
from prefray.results import load_result
from prefray.tasks import exponential_backoff, task_input_hash

pytestmark = [pytest.mark.usefixtures("api"), pytest.mark.timeout(60)]


def test_cache_hit_returns_cached_without_running() -> None:
    calls: list[int] = []

    @task(cache_key_fn=task_input_hash, cache_expiration=dt.timedelta(minutes=5))
    def expensive(x: int) -> int:
        calls.append(x)
        return x * 10

    @flow
    def cached() -> list[Any]:
        first = expensive(1, return_state=True)
        second = expensive(1, return_state=True)
        other = expensive(2, return_state=True)
        return [(s.name, s.result()) for s in (first, second, other)]

    assert cached() == [("Completed", 10), ("Cached", 10), ("Completed", 20)]
    assert calls == [1, 2]
    refreshed = expensive.with_options(refresh_cache=True)

    @flow
    def refreshing() -> str:
        return refreshed(1, return_state=True).name

    assert refreshing() == "Completed" and calls == [1, 2, 1]


def test_expired_cache_runs_again() -> None:
    calls: list[int] = []

    @task(cache_key_fn=lambda ctx, params: "fixed-key-expiry", cache_expiration=dt.timedelta(0))
    def short_lived() -> int:
        calls.append(1)
        return 1

    @flow
    def twice() -> None:
        short_lived()
        time.sleep(0.05)
        short_lived()

    twice()
    assert len(calls) == 2


def test_persisted_result_is_readable_from_the_api(tmp_path: Any) -> None:
    @task(persist_result=True, result_storage=str(tmp_path), result_serializer="json")
    def produce() -> dict[str, int]:
        return {"a": 1}

    @flow
    def persisting() -> Any:
        return produce(return_state=True)

    state = persisting(return_state=True)
    with get_client(sync_client=True) as client:
        (run,) = client.read_task_runs(flow_run_id=state.state_details.flow_run_id)
    assert run.state.data is not None
    assert load_result(run.state.data) == {"a": 1}  # in another process too: it is a file


def test_map_errors_name_the_parameters() -> None:
    @task
    def add(x: int, y: int) -> int:
        return x + y

    @flow
    def bad_lengths() -> None:
        add.map([1, 2], [1, 2, 3])

    @flow
    def no_iterable() -> None:
        add.map(1, unmapped([2]))

    with pytest.raises(MappingLengthMismatch, match="'x': 2, 'y': 3"):
        bad_lengths()
    with pytest.raises(MappingMissingIterable, match="x"):
        no_iterable()


def test_map_with_defaults_and_static_values() -> None:
    @task
    def combine(x: int, y: int = 5, scale: int = 1) -> int:
        return (x + y) * scale

    @flow
    def mapping() -> list[int]:
        return [f.result() for f in combine.map([1, 2], scale=unmapped(2))]

    assert mapping() == [12, 14]


@dataclasses.dataclass
class Box:
    value: Any


class Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)
    value: Any


def test_futures_nested_in_collections_are_resolved() -> None:
    @task
    def one() -> int:
        return 1

    @task
    def unpack(data: Any) -> Any:
        return data

    @flow
    def nesting() -> Any:
        f = one.submit()
        payload = {"l": [f], "t": (f,), "s": {f}, "box": Box(f), "model": Model(value=f)}
        return unpack.submit(payload).result()

    out = nesting()
    assert out["l"] == [1] and out["t"] == (1,) and out["s"] == {1}
    assert out["box"] == Box(1) and out["model"].value == 1


def test_task_outside_a_flow_runs_as_autonomous_task_run() -> None:
    @task(task_run_name="lonely-run")
    def lonely(x: int) -> int:
        return x + 1

    assert lonely(1) == 2
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(name="lonely-run")
    assert runs and runs[-1].flow_run_id is None and runs[-1].state.type.value == "COMPLETED"
    # .submit() outside a flow queues a Scheduled run for a task server (issue 5)
    queued = lonely.submit(1)
    with get_client(sync_client=True) as client:
        run = client.read_task_run(queued.task_run_id)
    assert run.flow_run_id is None and run.state.type.value == "SCHEDULED"


def test_wait_and_as_completed() -> None:
    @task
    def sleepy(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @flow
    def waiting() -> dict[str, Any]:
        futures = sleepy.map([0.4, 0.0])
        order = [f.result() for f in as_completed(futures)]
        done, not_done = wait(futures, timeout=5)
        return {"order": order, "done": len(done), "not_done": len(not_done)}

    assert waiting() == {"order": [0.0, 0.4], "done": 2, "not_done": 0}


def test_future_result_timeout_and_raise_on_failure() -> None:
    @task
    def slow() -> int:
        time.sleep(0.5)
        return 1

    @task
    def boom() -> None:
        raise ValueError("x")

    @flow
    def futures_api() -> dict[str, Any]:
        f = slow.submit()
        with pytest.raises(TimeoutError):
            f.result(timeout=0.01)
        pending = f.get_state().type.value
        failed = boom.submit()
        return {
            "pending": pending,
            "value": f.result(),
            "error": type(failed.result(raise_on_failure=False)).__name__,
        }

    assert futures_api() == {"pending": "PENDING", "value": 1, "error": "ValueError"}


def test_exponential_backoff_sets_retry_delays() -> None:
    t = task(retries=3, retry_delay_seconds=exponential_backoff(2))(lambda: None)
    assert t.retry_delay_seconds == [2, 4, 8]


def test_importing_prefray_and_task_runners_does_not_import_ray() -> None:
    code = "import sys, prefray, task_runners, prefray.engine.flow_run; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
