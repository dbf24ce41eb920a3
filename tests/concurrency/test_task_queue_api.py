"""The autonomous task-run queue through the API, on SQLite and PostgreSQL:
submit, atomic claims (each run to one claimer), leases, re-queue on expiry."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.anyio

_REF = {"storage_key": "params-key", "storage_path": "/tmp/x", "serializer": "pickle"}


async def _submit(client: httpx.AsyncClient, count: int, key: str = "mod.t") -> list[str]:
    body = [
        {
            "task_run": {"name": f"t-{i}", "task_key": key, "dynamic_key": uuid.uuid4().hex},
            "parameters": {**_REF, "storage_key": f"p{i}"},
        }
        for i in range(count)
    ]
    response = await client.post("/api/task_queue/submit", json=body)
    assert response.status_code == 201, response.text
    runs = response.json()
    assert all(r["state_type"] == "SCHEDULED" and r["flow_run_id"] is None for r in runs)
    return [r["id"] for r in runs]


async def _claim(
    client: httpx.AsyncClient, worker: str, limit: int = 1, lease: float = 30.0, key: str = "mod.t"
) -> list[dict[str, Any]]:
    body = {"task_keys": [key], "worker": worker, "limit": limit, "lease_seconds": lease}
    response = await client.post("/api/task_queue/claim", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def test_submit_then_claim_gives_pending_runs_with_their_parameters(
    client: httpx.AsyncClient,
) -> None:
    ids = await _submit(client, 3)
    claimed = await _claim(client, "w1", limit=2)
    assert [c["task_run"]["id"] for c in claimed] == ids[:2]  # oldest first
    assert all(c["task_run"]["state_type"] == "PENDING" for c in claimed)
    assert [c["parameters"]["storage_key"] for c in claimed] == ["p0", "p1"]
    assert [c["task_run"]["id"] for c in await _claim(client, "w2", limit=5)] == ids[2:]
    assert await _claim(client, "w3") == []
    assert await _claim(client, "w3", key="other.t") == []


async def test_concurrent_claims_hand_each_run_to_one_claimer(client: httpx.AsyncClient) -> None:
    ids = await _submit(client, 30)
    answers = await asyncio.gather(*(_claim(client, f"w{i}", limit=2) for i in range(40)))
    got = [c["task_run"]["id"] for answer in answers for c in answer]
    assert sorted(got) == sorted(ids)


async def test_an_expired_lease_requeues_an_unfinished_run(client: httpx.AsyncClient) -> None:
    [run] = await _submit(client, 1)
    [first] = await _claim(client, "dead", lease=0.2)
    await client.post(f"/api/task_runs/{run}/set_state", json={"state": {"type": "RUNNING"}})
    assert await _claim(client, "alive") == []  # lease still valid
    await asyncio.sleep(0.3)
    [again] = await _claim(client, "alive")
    assert again["task_run"]["id"] == first["task_run"]["id"]
    names = [s["name"] for s in (await client.get(f"/api/task_runs/{run}/states")).json()]
    assert names == ["Scheduled", "Pending", "Running", "Requeued", "Pending"]
    # the dead server's lease is gone: it can no longer renew
    renewed = await client.post(
        "/api/task_queue/renew", json={"task_run_ids": [run], "worker": "dead"}
    )
    assert renewed.json() == []


async def test_renewed_leases_are_kept_and_finished_runs_are_not_requeued(
    client: httpx.AsyncClient,
) -> None:
    a, b = await _submit(client, 2)
    await _claim(client, "w", limit=2, lease=0.3)
    for _ in range(3):
        await asyncio.sleep(0.15)
        body = {"task_run_ids": [a], "worker": "w", "lease_seconds": 0.3}
        assert (await client.post("/api/task_queue/renew", json=body)).json() == [a]
    await client.post(f"/api/task_runs/{b}/set_state", json={"state": {"type": "COMPLETED"}})
    assert await _claim(client, "other") == []  # a renewed; b finished
    released = await client.post(
        "/api/task_queue/release", json={"task_run_ids": [a], "worker": "w"}
    )
    assert released.json() == [a]
    [again] = await _claim(client, "other")  # released unfinished: queued again
    assert again["task_run"]["id"] == a


async def test_only_autonomous_runs_are_queued(client: httpx.AsyncClient) -> None:
    flow_run = (await client.post("/api/flow_runs/", json={"flow_name": "f"})).json()
    body = [
        {
            "task_run": {
                "name": "t",
                "task_key": "k",
                "dynamic_key": "0",
                "flow_run_id": flow_run["id"],
            },
            "parameters": _REF,
        }
    ]
    response = await client.post("/api/task_queue/submit", json=body)
    assert response.status_code == 422
    assert "only autonomous task runs" in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"task_keys": [], "worker": "w"},
        {"task_keys": ["k"], "worker": ""},
        {"task_keys": ["k"], "worker": "w", "limit": 0},
        {"task_keys": ["k"], "worker": "w", "lease_seconds": -1},
    ],
)
async def test_bad_claims_get_422(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    assert (await client.post("/api/task_queue/claim", json=body)).status_code == 422
