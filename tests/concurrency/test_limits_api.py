"""Tag concurrency limits through the API, on SQLite and PostgreSQL: CRUD, slots
taken on Running and freed on every exit, WAIT when full, ABORT at 0, and the
limit holding under concurrent writers."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.anyio


async def _limit(client: httpx.AsyncClient, tag: str, n: int) -> dict[str, Any]:
    response = await client.post(
        "/api/concurrency_limits/", json={"tag": tag, "concurrency_limit": n}
    )
    assert response.status_code == 201, response.text
    return response.json()


async def _task_runs(
    client: httpx.AsyncClient, count: int, tags: list[str], retries: int = 0
) -> list[str]:
    body = [
        {
            "name": f"t-{i}",
            "task_key": "t",
            "dynamic_key": uuid.uuid4().hex,
            "tags": tags,
            "empirical_policy": {"retries": retries},
        }
        for i in range(count)
    ]
    response = await client.post("/api/task_runs/bulk", json=body)
    assert response.status_code == 201, response.text
    return [run["id"] for run in response.json()]


async def _propose(
    client: httpx.AsyncClient, run_id: str, type_: str, name: str | None = None
) -> dict[str, Any]:
    state: dict[str, Any] = {"type": type_}
    if name:
        state["name"] = name
    response = await client.post(f"/api/task_runs/{run_id}/set_state", json={"state": state})
    assert response.status_code == 200, response.text
    return response.json()


async def _active(client: httpx.AsyncClient, tag: str) -> list[str]:
    response = await client.get(f"/api/concurrency_limits/tag/{tag}")
    assert response.status_code == 200, response.text
    return response.json()["active_slots"]


async def test_create_read_update_list_delete(client: httpx.AsyncClient) -> None:
    created = await _limit(client, "db", 2)
    assert created["tag"] == "db" and created["concurrency_limit"] == 2
    updated = await _limit(client, "db", 5)
    assert updated["id"] == created["id"] and updated["concurrency_limit"] == 5
    await _limit(client, "a/b c", 1)  # any text is a tag, also in the path
    listed = (await client.get("/api/concurrency_limits/")).json()
    assert [(x["tag"], x["concurrency_limit"]) for x in listed] == [("a/b c", 1), ("db", 5)]
    assert (await client.get("/api/concurrency_limits/tag/a%2Fb%20c")).status_code == 200
    assert (await client.delete("/api/concurrency_limits/tag/db")).status_code == 204
    missing = await client.delete("/api/concurrency_limits/tag/db")
    assert missing.status_code == 404 and "no concurrency limit on tag 'db'" in missing.text
    assert (await client.get("/api/concurrency_limits/tag/db")).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"tag": "db", "concurrency_limit": -1},
        {"tag": "", "concurrency_limit": 1},
        {"tag": "db"},
        {"tag": "db", "concurrency_limit": "many"},
    ],
)
async def test_bad_limits_are_refused_with_422(client: httpx.AsyncClient, body: Any) -> None:
    response = await client.post("/api/concurrency_limits/", json=body)
    assert response.status_code == 422
    assert "concurrency_limit" in response.text or "tag" in response.text


async def test_full_limit_answers_wait_and_a_finished_run_frees_its_slot(
    client: httpx.AsyncClient,
) -> None:
    await _limit(client, "db", 1)
    first, second = await _task_runs(client, 2, ["db", "other"])
    assert (await _propose(client, first, "RUNNING"))["status"] == "ACCEPT"
    assert await _active(client, "db") == [first]
    waiting = await _propose(client, second, "RUNNING")
    assert waiting["status"] == "WAIT"
    assert 0 < waiting["delay_seconds"] <= 1.0
    assert "'db' (1 of 1 in use)" in waiting["reason"]
    assert waiting["state"]["type"] == "PENDING"  # nothing written
    # proposing Running again while running keeps its one slot
    assert (await _propose(client, first, "RUNNING"))["status"] == "ACCEPT"
    assert (await _propose(client, first, "COMPLETED"))["status"] == "ACCEPT"
    assert await _active(client, "db") == []
    assert (await _propose(client, second, "RUNNING"))["status"] == "ACCEPT"


@pytest.mark.parametrize(
    ("exit_type", "name", "retries"),
    [
        ("COMPLETED", None, 0),
        ("FAILED", None, 0),
        ("FAILED", "TimedOut", 0),
        ("CRASHED", None, 0),
        ("CANCELLED", None, 0),
        ("FAILED", None, 1),  # becomes AwaitingRetry (Scheduled)
        ("PENDING", None, 0),
    ],
)
async def test_every_exit_from_running_frees_the_slot(
    client: httpx.AsyncClient, exit_type: str, name: str | None, retries: int
) -> None:
    await _limit(client, "db", 1)
    [run] = await _task_runs(client, 1, ["db"], retries=retries)
    assert (await _propose(client, run, "RUNNING"))["status"] == "ACCEPT"
    answer = await _propose(client, run, exit_type, name)
    if retries:
        assert answer["state"]["name"] == "AwaitingRetry"
    assert await _active(client, "db") == []
    # the retry takes a slot again
    if retries:
        assert (await _propose(client, run, "RUNNING", "Retrying"))["status"] == "ACCEPT"
        assert await _active(client, "db") == [run]


async def test_limit_zero_aborts_with_a_clear_message(client: httpx.AsyncClient) -> None:
    await _limit(client, "never", 0)
    [run] = await _task_runs(client, 1, ["never"])
    answer = await _propose(client, run, "RUNNING")
    assert answer["status"] == "ABORT"
    assert "tag 'never' has a concurrency limit of 0" in answer["reason"]


async def test_runs_without_limited_tags_are_not_limited(client: httpx.AsyncClient) -> None:
    await _limit(client, "db", 1)
    runs = await _task_runs(client, 3, ["web"])
    for run in runs:
        assert (await _propose(client, run, "RUNNING"))["status"] == "ACCEPT"


async def test_a_batch_of_reports_respects_the_limit_in_order(client: httpx.AsyncClient) -> None:
    await _limit(client, "db", 1)
    a, b = await _task_runs(client, 2, ["db"])
    reports = [
        {"task_run_id": a, "state": {"type": "RUNNING"}},
        {"task_run_id": b, "state": {"type": "RUNNING"}},
        {"task_run_id": a, "state": {"type": "COMPLETED"}},
        {"task_run_id": b, "state": {"type": "RUNNING"}},
    ]
    answers = (await client.post("/api/task_runs/states", json=reports)).json()
    assert [x["status"] for x in answers] == ["ACCEPT", "WAIT", "ACCEPT", "ACCEPT"]
    assert await _active(client, "db") == [b]


async def test_deleting_or_resetting_a_limit_frees_its_slots(client: httpx.AsyncClient) -> None:
    await _limit(client, "db", 1)
    a, b = await _task_runs(client, 2, ["db"])
    await _propose(client, a, "RUNNING")
    reset = await client.post("/api/concurrency_limits/reset/db")
    assert reset.status_code == 200 and reset.json()["active_slots"] == []
    assert (await _propose(client, b, "RUNNING"))["status"] == "ACCEPT"
    assert (await client.delete("/api/concurrency_limits/tag/db")).status_code == 204
    await _propose(client, b, "COMPLETED")  # no limit, nothing to free: still fine


async def test_concurrent_proposals_never_exceed_the_limit(client: httpx.AsyncClient) -> None:
    await _limit(client, "db", 3)
    runs = await _task_runs(client, 24, ["db"])
    answers = await asyncio.gather(*(_propose(client, run, "RUNNING") for run in runs))
    accepted = [run for run, a in zip(runs, answers, strict=True) if a["status"] == "ACCEPT"]
    assert len(accepted) == 3
    assert sorted(await _active(client, "db")) == sorted(accepted)
