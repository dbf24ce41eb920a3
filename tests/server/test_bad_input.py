"""Bad input gets a clear 4xx, never a 500: junk bodies, wrong types, unknown ids,
oversize requests, missing tokens, unsafe binds."""

from __future__ import annotations

import copy
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from prefray.exceptions import ConfigurationError
from prefray.schemas import MAX_LOG_MESSAGE_BYTES
from prefray.server.app import create_app
from prefray.server.middleware import _has_lone_surrogate
from prefray.server.serve import ServerThread, check_bind_allowed, run_server
from prefray.settings import Settings

NOW = dt.datetime.now(dt.timezone.utc).isoformat()
JUNK_BODIES: list[bytes] = [
    b"", b"{bad", b"null", b"[]", b"{}", b"42", b'"x"', b"\xff\xfe\x00", b'{"a":',
    b"[" * 5000 + b"]" * 5000, b'{"flow_name": NaN}', b"[" + b"{}," * 100 + b"{}]",
]  # fmt: skip
JUNK_VALUES: list[Any] = [
    None, -1, 10**30, 1.5, "", "x" * 10_000, "\u0000", "\ud800", [], {}, [None], {"": None},
    "not-a-uuid", str(uuid.uuid4()), "9999-99-99", True,
]  # fmt: skip


async def _ids(client: httpx.AsyncClient) -> dict[str, str]:
    fr = (await client.post("/api/flow_runs/", json={"flow_name": "f"})).json()
    body = [{"name": "t", "flow_run_id": fr["id"], "task_key": "k", "dynamic_key": "0"}]
    tr = (await client.post("/api/task_runs/bulk", json=body)).json()[0]
    return {"flow_run": fr["id"], "task_run": tr["id"]}


def _templates(ids: dict[str, str]) -> dict[tuple[str, str], Any]:
    """A valid body for every endpoint that takes one (mutated field by field below)."""
    fr, tr = ids["flow_run"], ids["task_run"]
    state = {"type": "RUNNING", "name": "Running", "timestamp": NOW,
             "state_details": {"cache_key": "c", "transition_id": str(uuid.uuid4())},
             "data": {"storage_key": "k"}}  # fmt: skip
    task = {"name": "t", "flow_run_id": fr, "task_key": "k", "dynamic_key": "1", "tags": ["a"],
            "empirical_policy": {"retries": 1, "retry_delay": [1, 2], "retry_jitter_factor": 0.1},
            "task_inputs": {"x": [{"input_type": "task_run", "id": tr}]},
            "state": state}  # fmt: skip
    return {
        ("POST", "/api/flow_runs/"): {"flow_name": "f", "name": "n", "parameters": {"a": 1},
                                      "tags": ["t"], "state": state, "entrypoint": "m:f"},
        ("POST", "/api/flow_runs/filter"): {"ids": [fr], "state_types": ["RUNNING"], "tags": ["t"],
                                            "name": "n", "limit": 5, "sort": "NAME_ASC"},
        ("POST", f"/api/flow_runs/{fr}/set_state"): {"state": state, "force": False},
        ("POST", f"/api/flow_runs/{fr}/resume"): {"run_input": {"a": 1}},
        ("POST", "/api/task_runs/"): task,
        ("POST", "/api/task_runs/bulk"): [task],
        ("POST", "/api/task_runs/filter"): {"flow_run_id": fr, "tags": ["a"], "limit": 3},
        ("POST", f"/api/task_runs/{tr}/set_state"): {"state": state},
        ("POST", "/api/task_runs/states"): [{"task_run_id": tr, "state": state}],
        ("POST", "/api/logs/"): [{"level": 20, "message": "m", "timestamp": NOW,
                                  "flow_run_id": fr}],
        ("POST", "/api/logs/filter"): {"flow_run_id": fr, "level_ge": 10},
    }  # fmt: skip


def _mutations(body: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """(where, mutated body) for every junk value at every field, recursively."""
    out = []
    items = (
        body.items()
        if isinstance(body, dict)
        else enumerate(body)
        if isinstance(body, list)
        else []
    )
    for key, value in items:
        for junk in JUNK_VALUES:
            mutated = copy.deepcopy(body)
            mutated[key] = junk
            out.append(((*path, key), mutated))
        for where, inner in _mutations(value, (*path, key)):
            mutated = copy.deepcopy(body)
            mutated[key] = inner
            out.append((where, mutated))
    return out


pytestmark = pytest.mark.anyio


async def test_no_500_for_junk_bodies(app: FastAPI, client: httpx.AsyncClient) -> None:
    ids = await _ids(client)
    paths = app.openapi()["paths"]
    routes = [(m.upper(), path) for path, ops in paths.items() for m in ops]
    assert len(routes) >= 17
    for method, path in routes:
        concrete = path.replace("{id}", ids["task_run" if "task_runs" in path else "flow_run"])
        concrete = concrete.replace("{key}", "run_input")
        for body in JUNK_BODIES:
            r = await client.request(
                method, concrete, content=body, headers={"content-type": "application/json"}
            )
            assert r.status_code < 500, (method, path, body[:40], r.text)
            if method == "POST" and r.status_code == 422:
                assert isinstance(r.json()["detail"], str)


@pytest.mark.slow
async def test_no_500_for_junk_field_values(client: httpx.AsyncClient) -> None:
    ids = await _ids(client)
    for (method, path), template in _templates(ids).items():
        r = await client.request(method, path, json=template)
        assert r.status_code < 300, (path, r.text)  # the templates themselves are valid
        for where, body in _mutations(template):
            content = json.dumps(body).encode("utf-8", "surrogatepass")
            r = await client.request(
                method, path, content=content, headers={"content-type": "application/json"}
            )
            assert r.status_code < 500, (path, where, r.text[:300])


async def test_junk_ids_in_paths(client: httpx.AsyncClient) -> None:
    for kind in ("flow_runs", "task_runs"):
        for bad in ("nope", "1", "%00", "' OR 1=1 --"):
            r = await client.get(f"/api/{kind}/{bad}")
            assert r.status_code == 422, r.text
            assert "id" in r.json()["detail"]
        missing = uuid.uuid4()
        for suffix in ("", "/states"):
            r = await client.get(f"/api/{kind}/{missing}{suffix}")
            assert r.status_code == 404
            assert r.json() == {"detail": f"{kind[:-1].replace('_', ' ')} {missing} not found"}
    r = await client.get(f"/api/flow_runs/{uuid.uuid4()}/input/x")
    assert r.status_code == 404


async def test_validation_errors_name_the_field(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/flow_runs/", json={"flow_name": 5})
    assert r.status_code == 422 and "flow_name" in r.json()["detail"]
    r = await client.post("/api/flow_runs/", json={"flow_name": "f", "bogus": 1})
    assert r.status_code == 422 and "bogus" in r.json()["detail"]
    r = await client.post("/api/task_runs/states", json=[{"task_run_id": str(uuid.uuid4()),
                                                          "state": {"type": "BOGUS"}}])  # fmt: skip
    assert r.status_code == 422 and "state.type" in r.json()["detail"]
    r = await client.post(
        "/api/flow_runs/", content=b"{bad", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and "JSON" in r.json()["detail"]
    policy = {"retries": -1}
    r = await client.post("/api/flow_runs/", json={"flow_name": "f", "empirical_policy": policy})
    assert r.status_code == 422 and "empirical_policy.retries" in r.json()["detail"]


async def test_values_json_cannot_hold_are_refused(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/flow_runs/",
        content=b'{"flow_name": "f", "parameters": {"x": NaN}}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and "stored" in r.json()["detail"]


async def test_oversize_log_message(client: httpx.AsyncClient) -> None:
    big = "x" * (MAX_LOG_MESSAGE_BYTES + 1)
    r = await client.post("/api/logs/", json=[{"level": 20, "message": big, "timestamp": NOW}])
    assert r.status_code == 422 and "message" in r.json()["detail"]


async def test_illegal_transition_is_a_reject_not_an_error(client: httpx.AsyncClient) -> None:
    ids = await _ids(client)
    path = f"/api/task_runs/{ids['task_run']}/set_state"
    await client.post(path, json={"state": {"type": "CANCELLED"}})
    r = await client.post(path, json={"state": {"type": "RUNNING"}})
    assert r.status_code == 200 and r.json()["status"] == "REJECT" and r.json()["reason"]


@pytest.fixture
async def small_app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    application = create_app(Settings(home=tmp_path), max_request_bytes=1000)
    async with application.router.lifespan_context(application):
        yield application


async def test_oversize_body_is_413(small_app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=small_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        logs = [{"level": 20, "message": "m" * 100, "timestamp": NOW} for _ in range(20)]
        r = await c.post("/api/logs/", json=logs)
        assert r.status_code == 413 and "1000 bytes" in r.json()["detail"]

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length
            for _ in range(20):
                yield b" " * 100

        r = await c.post(
            "/api/logs/", content=chunked(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 413
        assert (await c.post("/api/logs/", json=logs[:2])).status_code == 201


@pytest.fixture
async def keyed_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(Settings(home=tmp_path, api_key="s3cret"))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c


async def test_api_key_required(keyed_client: httpx.AsyncClient) -> None:
    c = keyed_client
    assert (await c.get("/api/health")).status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        for method, path in (("GET", "/api/version"), ("POST", "/api/flow_runs/filter"),
                             ("GET", "/openapi.json")):  # fmt: skip
            r = await c.request(method, path, headers=headers)
            assert r.status_code == 401, (headers, path)
            assert "PREFRAY_API_KEY" in r.json()["detail"]
    good = {"Authorization": "Bearer s3cret"}
    assert (await c.get("/api/version", headers=good)).status_code == 200
    r = await c.post("/api/flow_runs/", json={"flow_name": "f"}, headers=good)
    assert r.status_code == 201


def test_non_loopback_bind_refused_without_key(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    for host in ("0.0.0.0", "192.168.1.5", "example.com", "::"):
        with pytest.raises(ConfigurationError, match="PREFRAY_API_KEY"):
            check_bind_allowed(settings, host)
    with pytest.raises(ConfigurationError, match="PREFRAY_API_KEY"):
        run_server(settings, "0.0.0.0", 0)
    with pytest.raises(ConfigurationError, match="PREFRAY_API_KEY"):
        ServerThread(settings, "0.0.0.0")
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind_allowed(settings, host)
    check_bind_allowed(Settings(home=tmp_path, api_key="k"), "0.0.0.0")


@pytest.mark.parametrize(
    ("body", "lone"),
    [
        (b'[{"name": "plain"}]', False),
        (b'[{"name": "a \\" quote and a \\\\ backslash"}]', False),
        (b'[{"name": "\\u2603 snowman"}]', False),
        (b'[{"name": "\\ud83d\\ude00 a pair"}]', False),
        (b'[{"name": "\\ud800 lone"}]', True),
        (b'[{"name": "lone at the end \\udfff"}]', True),
    ],
)
def test_lone_surrogate_escapes_are_found(body: bytes, lone: bool) -> None:
    assert _has_lone_surrogate(body) is lone
