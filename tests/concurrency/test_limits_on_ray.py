"""Tag concurrency limits and task servers on a real local Ray cluster: the
maximum concurrency observed across Ray worker processes equals the limit."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefray import flow, task
from prefray.client import get_client
from prefray.settings import Settings
from prefray.task_server import TaskServer
from prefray.testing import prefray_test_harness

sys.path.insert(0, str(Path(__file__).parent.parent / "task_runners"))
sys.path.insert(0, str(Path(__file__).parent))
from ray_fixtures import make_ray_runner  # noqa: E402
from test_limits_in_flows import Counter  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture
def api() -> Iterator[Settings]:
    with prefray_test_harness() as settings:
        yield settings


def test_ray_workers_never_exceed_the_limit(api: Settings, tmp_path: Path) -> None:
    counter = Counter.create(tmp_path / "counter.json")
    with get_client(sync_client=True) as client:
        client.create_concurrency_limit("gpu", 1)
    path = counter.path

    @task(tags=["gpu"])
    def on_gpu(i: int) -> int:
        # inline (Ray workers cannot import this test module): the same counter
        import fcntl
        import json

        def bump(delta: int) -> None:
            with open(path, "r+") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                data = json.load(fh)
                data["now"] += delta
                data["max"] = max(data["max"], data["now"])
                fh.seek(0)
                fh.truncate()
                json.dump(data, fh)

        bump(1)
        time.sleep(0.2)
        bump(-1)
        return i

    @flow(task_runner=make_ray_runner())
    def fan_out() -> list[int]:
        return [f.result() for f in on_gpu.map(range(6))]

    assert fan_out() == list(range(6))
    assert Counter(path).max == 1
    with get_client(sync_client=True) as client:
        assert client.read_concurrency_limit("gpu").active_slots == []


@task
def triple(x: int) -> int:
    return 3 * x


def test_task_server_on_ray(api: Settings) -> None:
    futures = triple.map(range(4))
    server = TaskServer(triple, task_runner=make_ray_runner(), poll_interval=0.05)
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        assert [f.result(timeout=120) for f in futures] == [0, 3, 6, 9]
    finally:
        server.stop()
        thread.join(timeout=60)
