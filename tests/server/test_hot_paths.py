"""The hot routes over HTTP, on SQLite and PostgreSQL: what they answer is what is stored.

Bulk creation and batched reports build their answers without reading back
(`create_task_runs_json`, `apply_proposals_json`); these tests read back and
compare, field for field.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.anyio


async def _flow_run(client: httpx.AsyncClient) -> str:
    r = await client.post("/api/flow_runs/", json={"flow_name": "hot"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _ts(seconds: float) -> str:
    return (
        dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=seconds)
    ).isoformat()


async def test_bulk_create_answers_what_is_stored(client: httpx.AsyncClient) -> None:
    fr = await _flow_run(client)
    expiry = "2030-01-01T00:00:00+02:00"
    items: list[dict[str, Any]] = [
        {"name": "plain", "flow_run_id": fr, "task_key": "k", "dynamic_key": "0"},
        {"name": "full", "flow_run_id": fr, "task_key": "k", "dynamic_key": "1",
         "id": str(uuid.uuid4()), "tags": ["a", "é"], "cache_key": "ck", "cache_expiration": expiry,
         "empirical_policy": {"retries": 2, "retry_delay": [1, 2.5]},
         "task_inputs": {"x": [{"input_type": "parameter"}]}},
        {"name": "scheduled", "flow_run_id": fr, "task_key": "k", "dynamic_key": "2",
         "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": _ts(60)}}},
        {"name": "autonomous", "task_key": "k", "dynamic_key": "0"},
    ]  # fmt: skip
    r = await client.post("/api/task_runs/bulk", json=items)
    assert r.status_code == 201, r.text
    created = r.json()
    assert [c["name"] for c in created] == [i["name"] for i in items]
    for run in created:
        stored = (await client.get(f"/api/task_runs/{run['id']}")).json()
        if run["cache_expiration"] is not None:  # stored in UTC
            assert run["cache_expiration"] == expiry
            assert stored["cache_expiration"] == "2029-12-31T22:00:00Z"
            stored["cache_expiration"] = run["cache_expiration"]
        assert run == stored
        history = (await client.get(f"/api/task_runs/{run['id']}/states")).json()
        assert history == [run["state"]]
    assert created[0]["state"]["state_details"]["task_run_id"] == created[0]["id"]
    assert created[0]["state"]["state_details"]["flow_run_id"] == fr
    assert created[0]["expected_start_time"] == created[0]["state"]["timestamp"]
    assert created[2]["expected_start_time"] == _ts(60).replace("+00:00", "Z")
    # a replay answers the stored run, unchanged
    again = await client.post("/api/task_runs/bulk", json=items[:2])
    assert again.json() == [
        (await client.get(f"/api/task_runs/{run['id']}")).json() for run in created[:2]
    ]


async def test_batched_reports_answer_what_is_stored(client: httpx.AsyncClient) -> None:
    fr = await _flow_run(client)
    body = [{"name": f"t{i}", "flow_run_id": fr, "task_key": "k", "dynamic_key": str(i)}
            for i in range(3)]  # fmt: skip
    runs = (await client.post("/api/task_runs/bulk", json=body)).json()
    transition = str(uuid.uuid4())
    reports = [
        {"task_run_id": runs[0]["id"], "state": {"type": "RUNNING", "timestamp": _ts(1),
                                                 "state_details": {"transition_id": transition}}},
        {"task_run_id": runs[0]["id"], "state": {"type": "COMPLETED", "timestamp": _ts(3.5),
                                                 "state_details": {"cache_key": "c"}}},
        {"task_run_id": runs[0]["id"], "state": {"type": "RUNNING", "timestamp": _ts(4)}},
        {"task_run_id": runs[1]["id"], "state": {"type": "RUNNING", "timestamp": _ts(2),
                                                 "state_details": {"transition_id": transition}}},
        {"task_run_id": runs[1]["id"], "state": {"type": "RUNNING", "timestamp": _ts(2),
                                                 "state_details": {"transition_id": transition}}},
        {"task_run_id": str(uuid.uuid4()), "state": {"type": "RUNNING"}},
    ]  # fmt: skip
    r = await client.post("/api/task_runs/states", json=reports)
    assert r.status_code == 200, r.text
    answers = r.json()
    assert [a["status"] for a in answers] == ["ACCEPT", "ACCEPT", "REJECT", "ACCEPT", "ACCEPT",
                                              "ABORT"]  # fmt: skip
    assert answers[4]["reason"] == "this transition was already applied"
    assert answers[4]["state"] == answers[3]["state"]
    assert "not found" in answers[5]["reason"]
    done = (await client.get(f"/api/task_runs/{runs[0]['id']}")).json()
    assert done["state"] == answers[1]["state"] == answers[2]["state"]
    assert (done["state_type"], done["run_count"], done["total_run_time"]) == ("COMPLETED", 1, 2.5)
    assert done["start_time"] == _ts(1).replace("+00:00", "Z")
    assert done["end_time"] == _ts(3.5).replace("+00:00", "Z")
    assert done["cache_key"] == "c"
    history = (await client.get(f"/api/task_runs/{runs[0]['id']}/states")).json()
    assert history == [runs[0]["state"], answers[0]["state"], answers[1]["state"]]
    assert answers[0]["state"]["state_details"] == {
        **runs[0]["state"]["state_details"],
        "transition_id": transition,
    }
    running = (await client.get(f"/api/task_runs/{runs[1]['id']}")).json()
    assert (running["state"], running["run_count"]) == (answers[3]["state"], 1)
    untouched = (await client.get(f"/api/task_runs/{runs[2]['id']}")).json()
    assert untouched == runs[2]
    # the same batch again changes nothing but the un-keyed reports
    again = (await client.post("/api/task_runs/states", json=reports[3:5])).json()
    assert [a["reason"] for a in again] == ["this transition was already applied"] * 2


async def test_values_that_cannot_be_stored_are_refused(client: httpx.AsyncClient) -> None:
    fr = await _flow_run(client)
    body = (
        b'[{"name": "t", "flow_run_id": "' + fr.encode() + b'", "task_key": "k", '
        b'"dynamic_key": "0", "empirical_policy": {"retry_delay": NaN}}]'
    )
    r = await client.post(
        "/api/task_runs/bulk", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and "stored" in r.json()["detail"], r.text
    r = await client.post("/api/task_runs/bulk", content=b"[{", headers={})
    assert r.status_code == 422 and "JSON" in r.json()["detail"]
    r = await client.post("/api/task_runs/states", json=[{"task_run_id": "nope", "state": {}}])
    assert r.status_code == 422 and "body.0.task_run_id" in r.json()["detail"]
    assert "body.0.state.type" in r.json()["detail"]
