"""The worker's rounds against the real API: claims, --limit, which runs it leaves alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prefray.client import get_client
from prefray.schemas import SetStateStatus
from prefray.states import AwaitingRetry, Scheduled, StateType, now
from prefray.testing import prefray_test_harness
from prefray.worker import Worker

_FLOW = "from prefray import flow\n@flow\ndef quick() -> int:\n    return 1\n"


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with prefray_test_harness(), get_client(sync_client=True) as c:
        yield c


@pytest.fixture()
def entrypoint(tmp_path: Path) -> str:
    (tmp_path / "quick.py").write_text(_FLOW)
    return f"{tmp_path}/quick.py:quick"


def test_a_run_is_claimed_once(client: Any, entrypoint: str) -> None:
    run = client.create_flow_run("quick", state=Scheduled(), entrypoint=entrypoint)
    assert client.claim_flow_run(run.id).status == SetStateStatus.ACCEPT
    second = client.claim_flow_run(run.id)
    assert second.status == SetStateStatus.REJECT and "claimed already" in second.reason
    assert client.read_flow_run(run.id).state_type == StateType.PENDING


def test_limit_and_what_the_worker_leaves_alone(client: Any, entrypoint: str) -> None:
    due = [client.create_flow_run("quick", state=Scheduled(), entrypoint=entrypoint) for _ in "ab"]
    later = client.create_flow_run(
        "quick", state=Scheduled(scheduled_time=now().replace(year=now().year + 1)),
        entrypoint=entrypoint,
    )  # fmt: skip
    retrying = client.create_flow_run("quick", state=AwaitingRetry(), entrypoint=entrypoint)
    no_entrypoint = client.create_flow_run("quick", state=Scheduled())
    worker = Worker(client, limit=1, poll_interval=0.1)
    try:
        started = worker.poll_once()
        assert started == [due[0].id]
        assert worker.poll_once() == []  # at its limit
        for process in worker.processes.values():
            process.wait(60)
        worker.reap()
        assert client.read_flow_run(due[0].id).state_type == StateType.COMPLETED
        assert worker.poll_once() == [due[1].id]
    finally:
        worker._stop_children()
    for left in (later, retrying, no_entrypoint):
        assert client.read_flow_run(left.id).state_type == StateType.SCHEDULED


def test_limit_must_be_positive(client: Any) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Worker(client, limit=0)
