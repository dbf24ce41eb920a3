"""Tag concurrency limits seen from flows: the maximum concurrency actually
observed equals the limit, slots come back on failure, timeout and crash, and a
limit of 0 fails the run with the server's reason. Real API over HTTP, real
threads (ConcurrentTaskRunner), a file-lock-protected counter."""

from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefray import flow, tags, task
from prefray.cli import app as cli_app
from prefray.client import get_client
from prefray.settings import Settings
from prefray.testing import prefray_test_harness
from task_runners import ConcurrentTaskRunner


@pytest.fixture
def api() -> Iterator[Settings]:
    with prefray_test_harness() as settings:
        yield settings


class Counter:
    """How many holders are inside at once, and the most ever seen (across processes)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, path: Path) -> Counter:
        path.write_text(json.dumps({"now": 0, "max": 0}))
        return cls(path)

    def _update(self, delta: int) -> None:
        with self.path.open("r+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            data = json.load(fh)
            data["now"] += delta
            data["max"] = max(data["max"], data["now"])
            fh.seek(0)
            fh.truncate()
            json.dump(data, fh)

    def __enter__(self) -> Counter:
        self._update(1)
        return self

    def __exit__(self, *exc: object) -> None:
        self._update(-1)

    @property
    def max(self) -> int:
        return int(json.loads(self.path.read_text())["max"])


def _limit(tag: str, n: int) -> None:
    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag, n)


def _active(tag: str) -> list:
    with get_client(sync_client=True) as client:
        return client.read_concurrency_limit(tag).active_slots


@pytest.mark.slow
def test_observed_concurrency_never_exceeds_the_limit(api: Settings, tmp_path: Path) -> None:
    counter_path = tmp_path / "counter.json"
    Counter.create(counter_path)
    Counter.create(tmp_path / "free.json")
    _limit("db", 3)

    @task(tags=["db"])
    def guarded(i: int) -> int:
        with Counter(counter_path):
            time.sleep(0.1)
        return i

    @task
    def free(i: int) -> int:
        with Counter(tmp_path / "free.json"):
            time.sleep(0.1)
        return i

    @flow(task_runner=ConcurrentTaskRunner(max_workers=16))
    def many() -> list[int]:
        return [f.result() for f in guarded.map(range(24))] + [
            f.result() for f in free.map(range(8))
        ]

    assert many() == list(range(24)) + list(range(8))
    assert Counter(counter_path).max == 3
    assert Counter(tmp_path / "free.json").max > 3  # untagged: not limited
    assert _active("db") == []


def test_tags_context_applies_the_limit_too(api: Settings, tmp_path: Path) -> None:
    counter_path = tmp_path / "counter.json"
    Counter.create(counter_path)
    _limit("slow-api", 1)

    @task
    def call_api(i: int) -> int:
        with Counter(counter_path):
            time.sleep(0.05)
        return i

    @flow(task_runner=ConcurrentTaskRunner(max_workers=4))
    def calls() -> list[int]:
        with tags("slow-api"):
            return [f.result() for f in call_api.map(range(6))]

    assert calls() == list(range(6))
    assert Counter(counter_path).max == 1


def test_slots_come_back_after_failure_timeout_and_crash(api: Settings) -> None:
    _limit("one", 1)

    @task(tags=["one"])
    def fails() -> None:
        raise ValueError("boom")

    @task(tags=["one"], timeout_seconds=0.2)
    def times_out() -> None:
        time.sleep(2)

    @task(tags=["one"])
    def crashes() -> None:
        raise KeyboardInterrupt  # a BaseException: the run ends Crashed

    @task(tags=["one"], retries=1)
    def fails_then_works(marker: Path) -> str:
        if not marker.exists():
            marker.touch()
            raise RuntimeError("first attempt")
        return "ok"

    @task(tags=["one"])
    def after() -> str:
        return "ran"

    @flow(task_runner=ConcurrentTaskRunner(max_workers=4))
    def exits(marker: Path) -> list[str]:
        states = [
            fails.submit(return_state=True),
            times_out.submit(return_state=True),
            crashes.submit(return_state=True),
        ]
        retried = fails_then_works.submit(marker).result()
        return [s.name for s in states] + [retried, after.submit().result()]

    names = exits(Path(api.home) / "marker")
    assert names == ["Failed", "TimedOut", "Crashed", "ok", "ran"]
    assert _active("one") == []


def test_limit_zero_fails_the_run_with_a_clear_message(api: Settings) -> None:
    _limit("never", 0)

    @task(tags=["never"])
    def forbidden() -> int:
        raise AssertionError("must not run")

    @flow
    def tries() -> object:
        return forbidden.submit(return_state=True)

    state = tries(return_state=True)
    assert state.is_failed()
    assert "tag 'never' has a concurrency limit of 0" in (state.message or "")
    with get_client(sync_client=True) as client:
        [run] = client.read_task_runs(task_key=forbidden.task_key)
    assert run.state_type.value == "FAILED" and run.run_count == 0


def test_cli_creates_lists_inspects_and_deletes_limits(api: Settings) -> None:
    runner = CliRunner()
    created = runner.invoke(cli_app, ["concurrency-limit", "create", "db", "2"])
    assert created.exit_code == 0, created.output
    assert "Concurrency limit on tag 'db': 2." in created.output
    listed = runner.invoke(cli_app, ["concurrency-limit", "ls", "--json"])
    assert [(x["tag"], x["concurrency_limit"]) for x in json.loads(listed.output)] == [("db", 2)]
    inspected = runner.invoke(cli_app, ["concurrency-limit", "inspect", "db"])
    assert "limit 2, 0 in use" in inspected.output
    assert runner.invoke(cli_app, ["concurrency-limit", "delete", "db"]).exit_code == 0
    missing = runner.invoke(cli_app, ["concurrency-limit", "delete", "db"])
    assert missing.exit_code == 1 and "no concurrency limit on tag 'db'" in missing.output
    bad = runner.invoke(cli_app, ["concurrency-limit", "create", "db", "-1"])
    assert bad.exit_code != 0
