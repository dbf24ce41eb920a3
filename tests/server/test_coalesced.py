"""A creation carrying the transitions that followed (`TaskRunCreate.states`) stores
exactly what the same creation and then each state reported one by one would, on
SQLite and PostgreSQL, whether it is written in one go or (a rule could intervene)
applied the normal way.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
import pytest

from prefray.schemas import TaskRunCreate
from prefray.server.database.plain_creates import EMPTY_UPDATES
from prefray.server.database.task_runs import _coalesced
from prefray.states import Completed, Failed, Pending, Running, StateType

pytestmark = pytest.mark.anyio

# fields that differ between two runs by construction (ids, names, server clocks)
_OWN = {"id", "name", "dynamic_key", "created", "updated", "expected_start_time"}


def _ts(seconds: float) -> str:
    return (
        dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=seconds)
    ).isoformat()


def _state(kind: str, seconds: float, **details: Any) -> dict[str, Any]:
    details.setdefault("transition_id", str(uuid.uuid4()))
    state_id = str(uuid.uuid4())
    return {"id": state_id, "type": kind, "timestamp": _ts(seconds), "state_details": details}


async def _flow_run(client: httpx.AsyncClient) -> str:
    r = await client.post("/api/flow_runs/", json={"flow_name": "coalesced"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _strip_state(state: dict[str, Any] | None, server_made: bool) -> dict[str, Any] | None:
    if state is None:
        return None
    out = {**state, "state_details": dict(state["state_details"])}
    out["state_details"].pop("task_run_id")
    if server_made:  # Pending and AwaitingRetry are built by the server, at its own time
        out.pop("id")
        out.pop("timestamp")
        out["state_details"].pop("scheduled_time", None)
    return out


def _server_made(state: dict[str, Any]) -> bool:
    return state["name"] in ("Pending", "AwaitingRetry")


def _comparable(run: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    out = {k: v for k, v in run.items() if k not in _OWN}
    out["state"] = _strip_state(run["state"], _server_made(run["state"]))
    out["history"] = [_strip_state(s, _server_made(s)) for s in history]
    return out


async def _stored(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    run = (await client.get(f"/api/task_runs/{run_id}")).json()
    history = (await client.get(f"/api/task_runs/{run_id}/states")).json()
    return _comparable(run, history)


async def _both_ways(
    client: httpx.AsyncClient, states: list[dict[str, Any]], **create: Any
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(carried, one by one, what the carrying request answered), stored and comparable."""
    fr = await _flow_run(client)
    base = {"flow_run_id": fr, "task_key": "k", **create}
    one = {"name": "one", "dynamic_key": "0", "id": str(uuid.uuid4()), **base}
    r = await client.post("/api/task_runs/bulk", json=[one])
    assert r.status_code == 201, r.text
    for state in states:
        r = await client.post(
            "/api/task_runs/states", json=[{"task_run_id": one["id"], "state": state}]
        )
        assert r.status_code == 200, r.text
    carried = {"name": "carried", "dynamic_key": "1", "id": str(uuid.uuid4()), **base}
    r = await client.post("/api/task_runs/bulk", json=[{**carried, "states": states}])
    assert r.status_code == 201, r.text
    [answer] = r.json()
    return await _stored(client, carried["id"]), await _stored(client, one["id"]), answer


def _names(stored: dict[str, Any]) -> list[str]:
    return [s["name"] for s in stored["history"]]


async def test_running_then_completed_is_stored_as_one_by_one(client: httpx.AsyncClient) -> None:
    states = [_state("RUNNING", 1), _state("COMPLETED", 3.5)]
    carried, one_by_one, answer = await _both_ways(client, states)
    assert carried == one_by_one
    assert _names(carried) == ["Pending", "Running", "Completed"]
    assert carried["run_count"] == 1 and carried["total_run_time"] == 2.5
    assert carried["start_time"] == _ts(1).replace("+00:00", "Z")
    assert carried["end_time"] == _ts(3.5).replace("+00:00", "Z")
    assert _comparable(answer, []) == {**carried, "history": []}  # answers what it stored


async def test_failed_without_retries_is_stored_as_one_by_one(client: httpx.AsyncClient) -> None:
    states = [_state("RUNNING", 1), {**_state("FAILED", 2), "message": "boom"}]
    carried, one_by_one, _ = await _both_ways(client, states)
    assert carried == one_by_one
    assert carried["state_type"] == "FAILED" and carried["end_time"] is not None


async def test_failed_with_retries_left_takes_the_retry_rule(client: httpx.AsyncClient) -> None:
    states = [_state("RUNNING", 1), _state("FAILED", 2)]
    policy = {"retries": 2, "retry_delay": 0}
    carried, one_by_one, answer = await _both_ways(client, states, empirical_policy=policy)
    assert carried == one_by_one
    assert _names(carried) == ["Pending", "Running", "AwaitingRetry"]
    assert answer["state"]["name"] == "AwaitingRetry"  # answered as stored


async def test_a_refused_state_is_refused_as_one_by_one(client: httpx.AsyncClient) -> None:
    states = [_state("RUNNING", 1), _state("COMPLETED", 2), _state("RUNNING", 3)]
    carried, one_by_one, _ = await _both_ways(client, states)
    assert carried == one_by_one
    assert _names(carried) == ["Pending", "Running", "Completed"]


async def test_cache_key_and_concurrency_slot_as_one_by_one(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/concurrency_limits/", json={"tag": "lim", "concurrency_limit": 9})
    assert r.status_code in (200, 201), r.text
    cached = [_state("RUNNING", 1), _state("COMPLETED", 2, cache_key="ck")]
    carried, one_by_one, _ = await _both_ways(client, cached)
    assert carried == one_by_one and carried["cache_key"] == "ck"
    carried, one_by_one, _ = await _both_ways(client, [_state("RUNNING", 1)], tags=["lim"])
    assert carried == one_by_one
    limit = (await client.get("/api/concurrency_limits/tag/lim")).json()
    assert len(limit["active_slots"]) == 2  # both runs hold a slot


async def test_a_replay_is_harmless(client: httpx.AsyncClient) -> None:
    fr = await _flow_run(client)
    item = {"name": "r", "flow_run_id": fr, "task_key": "k", "dynamic_key": "0",
            "id": str(uuid.uuid4())}  # fmt: skip
    states = [_state("RUNNING", 1), _state("COMPLETED", 2)]
    first = await client.post("/api/task_runs/bulk", json=[{**item, "states": states}])
    again = await client.post("/api/task_runs/bulk", json=[{**item, "states": states}] * 2)
    assert again.status_code == 201, again.text
    assert again.json() == [first.json()[0]] * 2
    stored = await _stored(client, item["id"])
    assert _names(stored) == ["Pending", "Running", "Completed"] and stored["run_count"] == 1


async def test_carried_states_over_an_existing_run_are_applied(client: httpx.AsyncClient) -> None:
    fr = await _flow_run(client)
    item = {"name": "r", "flow_run_id": fr, "task_key": "k", "dynamic_key": "0"}
    r = await client.post("/api/task_runs/", json=item)
    assert r.status_code == 201
    states = [_state("RUNNING", 1), _state("COMPLETED", 2)]
    r = await client.post("/api/task_runs/", json={**item, "states": states})  # by key, no id
    assert r.status_code == 200, r.text
    assert r.json()["state_type"] == "COMPLETED" and r.json()["run_count"] == 1
    assert _names(await _stored(client, r.json()["id"])) == ["Pending", "Running", "Completed"]


async def test_states_out_of_time_order_are_refused(client: httpx.AsyncClient) -> None:
    fr = await _flow_run(client)
    item = {"name": "r", "flow_run_id": fr, "task_key": "k", "dynamic_key": "0",
            "states": [_state("RUNNING", 5), _state("COMPLETED", 2)]}  # fmt: skip
    r = await client.post("/api/task_runs/bulk", json=[item])
    assert r.status_code == 422
    assert "time order" in r.text and "states" in r.text
    assert (await client.post("/api/task_runs/filter", json={"flow_run_id": fr})).json() == []


def _create(**fields: Any) -> TaskRunCreate:
    return TaskRunCreate(name="t", task_key="k", dynamic_key="0", **fields)


def _first() -> tuple[Any, ...]:
    pending = Pending()
    return (StateType.PENDING, pending.timestamp, None, pending.model_dump(mode="json"))


@pytest.mark.parametrize(
    ("create", "written"),
    [
        (_create(states=[Running(), Completed()]), True),
        (_create(states=[Running(), Failed()]), True),  # no retries: the rule accepts
        (_create(states=[Running(), Failed()], empirical_policy={"retries": 1}), False),
        (_create(states=[Running(), Completed(), Running()]), False),
        (_create(states=[Running()], tags=["limited"]), False),
        (_create(states=[Running()], tags=["free"]), True),
    ],
)
def test_written_in_one_go_only_when_no_rule_can_intervene(
    create: TaskRunCreate, written: bool
) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    chain = _coalesced(uuid.uuid4(), create, _first(), EMPTY_UPDATES, now, frozenset({"limited"}))
    assert (chain is not None) is written


async def test_minimal_answer_is_null_only_for_runs_created_as_sent(
    client: httpx.AsyncClient,
) -> None:
    """`?answer=minimal`: null for a new run with every carried state written with it,
    the stored run otherwise (a replay, a rule that intervened); the same rows stored."""
    fr = await _flow_run(client)

    def item(key: str, **fields: Any) -> dict[str, Any]:
        return {"name": key, "flow_run_id": fr, "task_key": "k", "dynamic_key": key,
                "id": str(uuid.uuid4()), **fields}  # fmt: skip

    done = [_state("RUNNING", 1), _state("COMPLETED", 2)]
    plain, carried = item("plain"), item("carried", states=done)
    retried = item("retried", states=[_state("RUNNING", 1), _state("FAILED", 2)],
                   empirical_policy={"retries": 1, "retry_delay": 0})  # fmt: skip
    body = [plain, carried, retried]
    r = await client.post("/api/task_runs/bulk?answer=minimal", json=body)
    assert r.status_code == 201, r.text
    none_plain, none_carried, stored_retried = r.json()
    assert none_plain is None and none_carried is None
    assert stored_retried["id"] == retried["id"]
    assert stored_retried["state"]["name"] == "AwaitingRetry"
    assert _names(await _stored(client, carried["id"])) == ["Pending", "Running", "Completed"]
    # a replay (a retried request whose answer was lost) answers the stored runs
    again = await client.post("/api/task_runs/bulk?answer=minimal", json=body)
    assert again.status_code == 201, again.text
    full = await client.post("/api/task_runs/bulk", json=body)
    assert again.json() == full.json()
    assert [run["state_type"] for run in full.json()] == ["PENDING", "COMPLETED", "SCHEDULED"]
    assert _names(await _stored(client, carried["id"])) == ["Pending", "Running", "Completed"]


@pytest.mark.parametrize("value", ["", "Minimal", "none", "full,minimal"])
async def test_a_bad_answer_parameter_is_refused(client: httpx.AsyncClient, value: str) -> None:
    fr = await _flow_run(client)
    item = {"name": "r", "flow_run_id": fr, "task_key": "k", "dynamic_key": "0"}
    r = await client.post(f"/api/task_runs/bulk?answer={value}", json=[item])
    assert r.status_code == 422, r.text
    assert "answer" in r.json()["detail"]
    assert (await client.post("/api/task_runs/filter", json={"flow_run_id": fr})).json() == []
