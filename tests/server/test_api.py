"""The HTTP contract of docs/internals.md, in process, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.anyio


def _state(t: str, **extra: Any) -> dict[str, Any]:
    return {"type": t, **extra}


async def _flow_run(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body.setdefault("flow_name", "my-flow")
    r = await client.post("/api/flow_runs/", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def _task_runs(
    client: httpx.AsyncClient, flow_run_id: str, n: int, **extra: Any
) -> list[dict[str, Any]]:
    items = [
        {
            "name": f"t-{i}",
            "flow_run_id": flow_run_id,
            "task_key": "t",
            "dynamic_key": str(i),
            **extra,
        }
        for i in range(n)
    ]
    r = await client.post("/api/task_runs/bulk", json=items)
    assert r.status_code == 201, r.text
    return r.json()


async def _report(client: httpx.AsyncClient, reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    r = await client.post("/api/task_runs/states", json=reports)
    assert r.status_code == 200, r.text
    return r.json()


async def test_health_version_openapi(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/health")).json() == {"status": "ok"}
    version = (await client.get("/api/version")).json()
    assert set(version) == {"api_version", "server_version"}
    spec = (await client.get("/openapi.json")).json()
    assert "/api/task_runs/states" in spec["paths"]
    assert (await client.get("/docs")).status_code == 200


async def test_flow_run_create_replay_and_read(client: httpx.AsyncClient) -> None:
    run_id = str(uuid.uuid4())
    run = await _flow_run(client, id=run_id, parameters={"x": [1, 2]}, tags=["a"])
    assert run["id"] == run_id and run["state_type"] == "PENDING" and run["name"]
    assert run["state"]["state_details"]["flow_run_id"] == run_id
    replay = await client.post("/api/flow_runs/", json={"id": run_id, "flow_name": "my-flow"})
    assert replay.status_code == 200 and replay.json()["id"] == run_id
    other = await _flow_run(client)
    assert other["flow_id"] == run["flow_id"]  # one flow row per flow_name
    read = (await client.get(f"/api/flow_runs/{run_id}")).json()
    assert read["parameters"] == {"x": [1, 2]} and read["tags"] == ["a"]
    missing = uuid.uuid4()
    r = await client.get(f"/api/flow_runs/{missing}")
    assert r.status_code == 404 and r.json() == {"detail": f"flow run {missing} not found"}


async def test_flow_run_with_initial_running_state(client: httpx.AsyncClient) -> None:
    run = await _flow_run(client, state=_state("RUNNING"))
    assert run["run_count"] == 1 and run["start_time"] is not None


async def test_flow_run_filters(client: httpx.AsyncClient) -> None:
    a = await _flow_run(client, flow_name="alpha", name="first-run", tags=["x", "y"])
    b = await _flow_run(client, flow_name="beta", name="second-run", tags=["x"])
    await client.post(f"/api/flow_runs/{b['id']}/set_state", json={"state": _state("RUNNING")})

    async def ids(**flt: Any) -> list[str]:
        r = await client.post("/api/flow_runs/filter", json=flt)
        assert r.status_code == 200, r.text
        return [run["id"] for run in r.json()]

    assert await ids(tags=["x", "y"]) == [a["id"]]
    assert set(await ids(tags=["x"])) == {a["id"], b["id"]}
    assert await ids(flow_name="beta") == [b["id"]]
    assert await ids(state_types=["RUNNING"]) == [b["id"]]
    assert await ids(state_names=["Pending"]) == [a["id"]]
    assert await ids(name="first") == [a["id"]]
    assert await ids(name="%") == []  # a substring, not a pattern
    assert await ids(sort="CREATED_ASC") == [a["id"], b["id"]]
    assert await ids(sort="CREATED_DESC", limit=1) == [b["id"]]
    assert await ids(sort="CREATED_DESC", offset=1) == [a["id"]]
    assert await ids(ids=[a["id"]]) == [a["id"]]
    assert len((await client.post("/api/flow_runs/filter")).json()) == 2  # body is optional


async def test_flow_run_states_and_history(client: httpx.AsyncClient) -> None:
    run = await _flow_run(client)
    for t in ("RUNNING", "COMPLETED"):
        r = await client.post(f"/api/flow_runs/{run['id']}/set_state", json={"state": _state(t)})
        assert r.json()["status"] == "ACCEPT"
    r = await client.post(
        f"/api/flow_runs/{run['id']}/set_state", json={"state": _state("RUNNING")}
    )
    assert r.json()["status"] == "REJECT" and "never runs twice" in r.json()["reason"]
    assert r.json()["state"]["type"] == "COMPLETED"
    history = (await client.get(f"/api/flow_runs/{run['id']}/states")).json()
    assert [s["type"] for s in history] == ["PENDING", "RUNNING", "COMPLETED"]
    read = (await client.get(f"/api/flow_runs/{run['id']}")).json()
    assert read["run_count"] == 1 and read["end_time"] is not None
    forced = await client.post(
        f"/api/flow_runs/{run['id']}/set_state", json={"state": _state("RUNNING"), "force": True}
    )
    assert forced.json()["status"] == "ACCEPT"
    r = await client.post(
        f"/api/flow_runs/{uuid.uuid4()}/set_state", json={"state": _state("RUNNING")}
    )
    assert r.status_code == 404
    assert (await client.get(f"/api/flow_runs/{uuid.uuid4()}/states")).status_code == 404


async def test_resume(client: httpx.AsyncClient) -> None:
    run = await _flow_run(client, state=_state("RUNNING"))
    path = f"/api/flow_runs/{run['id']}"
    r = await client.post(f"{path}/resume", json={})
    assert r.json()["status"] == "REJECT"
    assert r.json()["reason"] == f"flow run {run['id']} is not paused (state Running)"
    await client.post(
        f"{path}/set_state", json={"state": _state("PAUSED", state_details={"pause_key": "p1"})}
    )
    r = await client.post(f"{path}/resume", json={"run_input": {"answer": 42}})
    assert r.json()["status"] == "ACCEPT" and r.json()["state"]["name"] == "Running"
    stored = (await client.get(f"{path}/input/p1")).json()
    assert stored["value"] == {"answer": 42}
    assert (await client.get(f"{path}/input/nope")).status_code == 404
    assert (await client.get(f"{path}/states")).json()[-1]["type"] == "RUNNING"
    read = (await client.get(path)).json()
    assert read["run_count"] == 1  # resuming continues the same attempt
    # a suspended run (its process exited) is rescheduled for a fresh process
    suspended = _state("PAUSED", name="Suspended", state_details={"pause_reschedule": True})
    await client.post(f"{path}/set_state", json={"state": suspended})
    r = await client.post(f"{path}/resume", json={"run_input": {"a": 1}})
    assert r.json()["state"]["name"] == "Resuming" and r.json()["state"]["type"] == "SCHEDULED"
    assert (await client.get(f"{path}/input/run_input")).json()["value"] == {"a": 1}
    assert (await client.post(f"/api/flow_runs/{uuid.uuid4()}/resume", json={})).status_code == 404


async def test_resume_after_pause_timeout_is_rejected(client: httpx.AsyncClient) -> None:
    run = await _flow_run(client, state=_state("RUNNING"))
    past = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)).isoformat()
    await client.post(
        f"/api/flow_runs/{run['id']}/set_state",
        json={"state": _state("PAUSED", state_details={"pause_timeout": past})},
    )
    r = await client.post(f"/api/flow_runs/{run['id']}/resume", json={})
    assert r.json()["status"] == "REJECT" and "timed out" in r.json()["reason"]


async def test_task_run_upsert(client: httpx.AsyncClient) -> None:
    fr = await _flow_run(client)
    body = {"name": "t", "flow_run_id": fr["id"], "task_key": "k", "dynamic_key": "0"}
    first = await client.post("/api/task_runs/", json=body)
    assert first.status_code == 201
    again = await client.post("/api/task_runs/", json={**body, "id": str(uuid.uuid4())})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    by_id = await client.post(
        "/api/task_runs/", json={**body, "id": first.json()["id"], "dynamic_key": "9"}
    )
    assert by_id.status_code == 200 and by_id.json()["dynamic_key"] == "0"
    auto = await client.post("/api/task_runs/", json={**body, "flow_run_id": None})
    assert auto.status_code == 201 and auto.json()["flow_run_id"] is None
    missing = uuid.uuid4()
    r = await client.post("/api/task_runs/", json={**body, "flow_run_id": str(missing)})
    assert r.status_code == 404 and r.json()["detail"] == f"flow run {missing} not found"
    r = await client.get(f"/api/task_runs/{uuid.uuid4()}")
    assert r.status_code == 404 and "task run" in r.json()["detail"]


async def test_bulk_create_keeps_order_and_replays(client: httpx.AsyncClient) -> None:
    fr = await _flow_run(client)
    runs = await _task_runs(
        client, fr["id"], 50, tags=["m"], task_inputs={"x": [{"input_type": "parameter"}]}
    )
    assert [r["dynamic_key"] for r in runs] == [str(i) for i in range(50)]
    assert runs[0]["task_inputs"] == {"x": [{"input_type": "parameter", "id": None}]}
    # a replay of half the batch plus new items, and a duplicate inside the request
    items = [{"name": f"t-{i}", "flow_run_id": fr["id"], "task_key": "t", "dynamic_key": str(i)}
             for i in [*range(25, 60), 55]]  # fmt: skip
    r = await client.post("/api/task_runs/bulk", json=items)
    answer = r.json()
    assert [a["id"] for a in answer[:25]] == [run["id"] for run in runs[25:]]
    assert answer[-1]["id"] == answer[-6]["id"]  # the repeated item names the same run
    listed = (
        await client.post("/api/task_runs/filter", json={"flow_run_id": fr["id"], "limit": 1000})
    ).json()
    assert len(listed) == 60
    assert [t["dynamic_key"] for t in listed] == [str(i) for i in range(60)]  # creation order
    states = (await client.get(f"/api/task_runs/{runs[0]['id']}/states")).json()
    assert [s["type"] for s in states] == ["PENDING"]


async def test_task_run_filters(client: httpx.AsyncClient) -> None:
    fr = await _flow_run(client)
    runs = await _task_runs(client, fr["id"], 3, tags=["a", "b"])
    await _report(client, [{"task_run_id": runs[0]["id"], "state": _state("RUNNING")}])

    async def ids(**flt: Any) -> list[str]:
        r = await client.post("/api/task_runs/filter", json=flt)
        assert r.status_code == 200, r.text
        return [t["id"] for t in r.json()]

    assert await ids(state_types=["RUNNING"]) == [runs[0]["id"]]
    assert len(await ids(tags=["a", "b"], flow_run_id=fr["id"])) == 3
    assert await ids(tags=["zzz"]) == []
    assert await ids(task_key="t", sort="CREATED_DESC", limit=1) == [runs[2]["id"]]
    assert await ids(name="t-1") == [runs[1]["id"]]


async def test_batch_reports_apply_in_order(client: httpx.AsyncClient) -> None:
    fr = await _flow_run(client)
    runs = await _task_runs(client, fr["id"], 3)
    t0 = dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.timezone.utc)
    reports = []
    for run in runs:
        reports.append(
            {"task_run_id": run["id"], "state": _state("RUNNING", timestamp=t0.isoformat())}
        )
        done = (t0 + dt.timedelta(seconds=2)).isoformat()
        reports.append({"task_run_id": run["id"], "state": _state("COMPLETED", timestamp=done)})
    unknown = str(uuid.uuid4())
    reports.insert(3, {"task_run_id": unknown, "state": _state("RUNNING")})
    results = await _report(client, reports)
    assert [r["status"] for r in results] == ["ACCEPT"] * 3 + ["ABORT"] + ["ACCEPT"] * 3
    assert results[3]["reason"] == f"task run {unknown} not found"
    read = (await client.get(f"/api/task_runs/{runs[0]['id']}")).json()
    # times come from the proposed states, not from when the batch arrived
    assert read["state_type"] == "COMPLETED" and read["run_count"] == 1
    assert (
        read["start_time"] == "2024-05-01T10:00:00Z" and read["end_time"] == "2024-05-01T10:00:02Z"
    )
    assert read["total_run_time"] == 2.0
    assert read["state"]["state_details"]["flow_run_id"] == fr["id"]
    again = await _report(client, [{"task_run_id": runs[0]["id"], "state": _state("RUNNING")}])
    assert again[0]["status"] == "REJECT" and again[0]["state"]["type"] == "COMPLETED"


async def test_transition_ids_make_reports_idempotent(client: httpx.AsyncClient) -> None:
    fr = await _flow_run(client)
    [run] = await _task_runs(client, fr["id"], 1)
    tid = str(uuid.uuid4())
    report = {
        "task_run_id": run["id"],
        "state": _state("RUNNING", state_details={"transition_id": tid}),
    }
    first = await _report(client, [report, report])  # replayed inside one batch
    second = await _report(client, [report])  # and in a later one
    assert [r["status"] for r in first + second] == ["ACCEPT"] * 3
    read = (await client.get(f"/api/task_runs/{run['id']}")).json()
    assert read["run_count"] == 1
    assert len((await client.get(f"/api/task_runs/{run['id']}/states")).json()) == 2


async def test_minimal_report_answers(client: httpx.AsyncClient) -> None:
    """`?answer=minimal`: null for a report accepted as proposed, the result otherwise
    (a refusal, an unknown run); the states are applied exactly as with full answers."""
    fr = await _flow_run(client)
    [run, other] = await _task_runs(client, fr["id"], 2)
    unknown = str(uuid.uuid4())
    reports = [
        {"task_run_id": run["id"], "state": _state("RUNNING", id=str(uuid.uuid4()))},
        {"task_run_id": run["id"], "state": _state("COMPLETED")},
        {"task_run_id": run["id"], "state": _state("RUNNING")},  # refused: it is done
        {"task_run_id": unknown, "state": _state("RUNNING")},
        {"task_run_id": other["id"], "state": _state("RUNNING")},
    ]
    r = await client.post("/api/task_runs/states?answer=minimal", json=reports)
    assert r.status_code == 200, r.text
    accepted, done, refused, missing, running = r.json()
    assert accepted is None and done is None and running is None
    assert refused["status"] == "REJECT" and refused["state"]["type"] == "COMPLETED"
    assert missing["status"] == "ABORT" and missing["reason"] == f"task run {unknown} not found"
    read = (await client.get(f"/api/task_runs/{run['id']}")).json()
    assert read["state_type"] == "COMPLETED" and read["run_count"] == 1
    for bad in ("", "MINIMAL", "short"):
        r = await client.post(f"/api/task_runs/states?answer={bad}", json=reports[4:])
        assert r.status_code == 422 and "answer" in r.json()["detail"], r.text
    assert (await client.get(f"/api/task_runs/{other['id']}")).json()["run_count"] == 1


async def test_retry_via_api(client: httpx.AsyncClient) -> None:
    fr = await _flow_run(client)
    policy = {"retries": 1, "retry_delay": 30}
    [run] = await _task_runs(client, fr["id"], 1, empirical_policy=policy)
    rid = run["id"]
    results = await _report(
        client,
        [{"task_run_id": rid, "state": _state("RUNNING")},
         {"task_run_id": rid, "state": _state("FAILED", message="boom")},
         {"task_run_id": rid, "state": _state("RUNNING", name="Retrying")}],
    )  # fmt: skip
    assert results[1]["status"] == "REJECT" and results[1]["state"]["name"] == "AwaitingRetry"
    assert results[2]["status"] == "WAIT" and 25 < results[2]["delay_seconds"] <= 30
    forced = await client.post(
        f"/api/task_runs/{rid}/set_state",
        json={"state": _state("RUNNING", name="Retrying"), "force": True},
    )
    assert forced.json()["status"] == "ACCEPT"
    r = await client.post(f"/api/task_runs/{rid}/set_state", json={"state": _state("FAILED")})
    assert r.json()["status"] == "ACCEPT"
    assert (await client.get(f"/api/task_runs/{rid}")).json()["run_count"] == 2


async def test_cache_hit_across_task_runs(client: httpx.AsyncClient) -> None:
    fr = await _flow_run(client)
    first, second, third = await _task_runs(client, fr["id"], 3)
    data = {"storage_key": "result-1", "serializer": "pickle"}
    expires = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat()
    details = {"cache_key": "k1", "cache_expiration": expires}
    done = _state("COMPLETED", data=data, state_details=details)
    await _report(
        client,
        [{"task_run_id": first["id"], "state": _state("RUNNING")},
         {"task_run_id": first["id"], "state": done}],
    )  # fmt: skip
    hit = await _report(
        client,
        [
            {
                "task_run_id": second["id"],
                "state": _state("RUNNING", state_details={"cache_key": "k1"}),
            }
        ],
    )
    assert hit[0]["status"] == "REJECT"
    assert (
        hit[0]["state"]["name"] == "Cached" and hit[0]["state"]["data"]["storage_key"] == "result-1"
    )
    refresh = _state("RUNNING", state_details={"cache_key": "k1", "refresh_cache": True})
    assert (await _report(client, [{"task_run_id": third["id"], "state": refresh}]))[0][
        "status"
    ] == "ACCEPT"
    [other] = await _task_runs(client, (await _flow_run(client))["id"], 1)
    miss = _state("RUNNING", state_details={"cache_key": "other"})
    assert (await _report(client, [{"task_run_id": other["id"], "state": miss}]))[0][
        "status"
    ] == "ACCEPT"


async def test_expired_cache_is_a_miss(client: httpx.AsyncClient) -> None:
    fr = await _flow_run(client)
    first, second = await _task_runs(client, fr["id"], 2)
    past = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)).isoformat()
    await _report(
        client,
        [{"task_run_id": first["id"], "state": _state("RUNNING")},
         {"task_run_id": first["id"], "state": _state(
             "COMPLETED", state_details={"cache_key": "k", "cache_expiration": past})}],
    )  # fmt: skip
    run = _state("RUNNING", state_details={"cache_key": "k"})
    assert (await _report(client, [{"task_run_id": second["id"], "state": run}]))[0][
        "status"
    ] == "ACCEPT"


async def test_logs(client: httpx.AsyncClient) -> None:
    fr = await _flow_run(client)
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    logs = [
        {"level": 10 * (i % 5), "message": f"m{i}", "flow_run_id": fr["id"],
         "timestamp": (t0 + dt.timedelta(seconds=i)).isoformat()}
        for i in reversed(range(10))
    ]  # fmt: skip
    r = await client.post("/api/logs/", json=logs)
    assert r.status_code == 201 and r.json() == {"count": 10}
    read = (await client.post("/api/logs/filter", json={"flow_run_id": fr["id"]})).json()
    assert [log["message"] for log in read] == [f"m{i}" for i in range(10)]  # oldest first
    high = (
        await client.post("/api/logs/filter", json={"flow_run_id": fr["id"], "level_ge": 30})
    ).json()
    assert {log["level"] for log in high} == {30, 40}
    page = (await client.post("/api/logs/filter", json={"limit": 3, "offset": 2})).json()
    assert [log["message"] for log in page] == ["m2", "m3", "m4"]


async def test_log_with_nul_is_kept(client: httpx.AsyncClient) -> None:
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    r = await client.post(
        "/api/logs/", json=[{"level": 20, "message": "a\u0000b", "timestamp": now}]
    )
    assert r.status_code == 201
    [log] = (await client.post("/api/logs/filter", json={})).json()
    assert log["message"].startswith("a") and log["message"].endswith("b")
