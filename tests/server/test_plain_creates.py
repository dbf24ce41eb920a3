"""Bulk creations read without models (`plain_creates`) store exactly what the validated
path stores: the same run rows and history rows, column for column, on both dialects;
the same answers; and every body the plain reader does not take goes the validated
way, with its 422s.

The row builders are compared directly, with the server's clock and id generator made
deterministic (both paths then draw the same values in the same order); the routes
are compared over HTTP on SQLite and PostgreSQL.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from prefray.server.api.task_runs import TASK_RUN_CREATES, _parse_creates
from prefray.server.database import plain_creates, task_runs, transitions
from prefray.server.database.fastpath import plain_write
from prefray.server.database.fastsql import codec_for, iso_json, json_ts_of_stored
from prefray.server.database.plain_creates import parse_plain_creates, plain_row
from prefray.server.database.wire import WireState
from prefray.states import StateType

_T0 = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone.utc)


def _ts(seconds: float) -> str:
    """A timestamp as the client writes it (pydantic's JSON of a UTC datetime)."""
    value = _T0 + dt.timedelta(seconds=seconds)
    return json.loads(json.dumps(value.isoformat().replace("+00:00", "Z")))


def _state(kind: str, seconds: float, **details: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "type": kind,
        "name": kind.title(),
        "timestamp": _ts(seconds),
        "state_details": {
            "transition_id": str(uuid.uuid4()),
            "pause_reschedule": False,
            "untrackable_result": False,
            **details,
        },
    }


def _item(flow_run_id: str | None, key: str, **fields: Any) -> dict[str, Any]:
    """A creation as the reporter sends it for a mapped task run that ran and finished."""
    item = {
        "id": str(uuid.uuid4()),
        "name": f"inc-{key}",
        "flow_run_id": flow_run_id,
        "task_key": "inc-8b8393fb",
        "dynamic_key": key,
        "tags": [],
        "task_inputs": {},
        "empirical_policy": {"retries": 0, "retry_delay": 0.0},
        "states": [_state("RUNNING", 1), _state("COMPLETED", 1.5)],
    }
    item.update(fields)
    return item


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The server's clock and random ids, deterministic; `reset()` starts them over."""
    state: dict[str, Any] = {}

    def reset() -> None:
        state["ticks"] = itertools.count()
        state["ids"] = itertools.count(1)
        state["later"] = itertools.count()

    def now() -> dt.datetime:
        return _T0 + dt.timedelta(microseconds=next(state["ticks"]) * 1_001)

    def uuid4() -> uuid.UUID:
        return uuid.UUID(int=next(state["ids"]) * 0x1000_0000_0000_0001)

    def later() -> dt.datetime:  # states applied after the insert: a clock of their own
        return _T0 + dt.timedelta(seconds=60 + next(state["later"]))

    for module in (task_runs, plain_creates):
        monkeypatch.setattr(module, "now", now)
        monkeypatch.setattr(module, "uuid4", uuid4)
    monkeypatch.setattr(transitions, "now", later)
    reset()
    yield reset


def _rows_both_ways(clock: Any, dialect: str, body: bytes) -> list[Any] | None:
    """Each item's (run row, history rows, written with its states) from the plain
    builder and from the validated one, or None where the plain reader declines the
    body; asserts the validated path accepts every body the plain reader takes."""
    plain = parse_plain_creates(body)
    if plain is None:
        return None
    validated = _parse_creates(TASK_RUN_CREATES, body)  # must not raise
    codec = codec_for(dialect)
    created = [_T0 + dt.timedelta(microseconds=i) for i in range(len(plain))]
    out = []
    for i, (fast, slow) in enumerate(zip(plain, validated, strict=True)):
        clock()
        made = plain_row(codec, fast, codec.ts(created[i]))
        clock()
        p = task_runs._row(codec, slow, created[i], frozenset())
        if made is not None:  # else the route builds it the validated way
            assert made == (p.values, p.history, p.coalesced), i
        out.append(made)
    return out


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_codec_shortcuts_store_what_ts_stores(dialect: str) -> None:
    codec = codec_for(dialect)
    starts = [_T0, _T0.replace(microsecond=0), _T0.replace(microsecond=999_990)]
    starts += [_T0 + dt.timedelta(microseconds=k * 7_919) for k in range(200)]
    for start in starts:
        assert codec.ts_steps(start, 20) == [
            codec.ts(start + dt.timedelta(microseconds=i)) for i in range(20)
        ]
        text = iso_json(start)
        parsed = dt.datetime.fromisoformat(text[:-1] + "+00:00")
        assert parsed == start and codec.ts_of_json(text, parsed) == codec.ts(start)
        if dialect == "sqlite":
            assert json_ts_of_stored(codec.ts(start)) == text


def _body(items: Any) -> bytes:
    return json.dumps(items).encode()


FR = str(uuid.uuid4())


def _cases() -> dict[str, list[dict[str, Any]]]:
    return {
        "w1": [_item(FR, str(i)) for i in range(3)],
        "pending only": [
            _item(FR, "0", states=None),
            _item(FR, "1", states=[]),
            {k: v for k, v in _item(FR, "2").items() if k != "states"},
        ],
        "server-made ids": [{k: v for k, v in _item(FR, "0").items() if k != "id"}],
        "autonomous": [_item(None, "0"), {**_item(FR, "1"), "flow_run_id": None}],
        "defaults omitted": [
            {k: v for k, v in _item(FR, "0").items() if k not in ("tags", "task_inputs")},
            {**_item(FR, "1"), "empirical_policy": {}},
            {**_item(FR, "2"), "empirical_policy": {"retries": 0, "retry_delay": 0}},
            {**_item(FR, "3"),
             "empirical_policy": {"retry_delay": -0.0, "retry_jitter_factor": None}},
        ],
        "tags and inputs": [
            _item(FR, "0", tags=["a", "é", ""]),
            _item(FR, "1", task_inputs={
                "x": [{"input_type": "task_run", "id": str(uuid.uuid4())}],
                "y": [{"input_type": "parameter"}, {"id": None}, {}],
                "z": [],
            }),
        ],
        "state variants": [
            _item(FR, "0", states=[
                {**_state("RUNNING", 1), "name": "Warming up", "message": 'say "hi" \u2603'},
                {**_state("COMPLETED", 1), "name": None, "message": None, "data": None},
            ]),
            _item(FR, "1", states=[
                _state("RUNNING", 0, flow_run_id=str(uuid.uuid4()), task_run_id=str(uuid.uuid4())),
                _state("COMPLETED", 2, pause_reschedule=True, untrackable_result=True,
                       cache_key=None, scheduled_time=None, retriable=None),
            ]),
            _item(FR, "2", states=[
                {k: v for k, v in _state("RUNNING", 1).items()
                 if k not in ("name", "state_details")},
                {**_state("COMPLETED", 3), "state_details": {"transition_id": None}},
            ]),
            _item(FR, "3", states=[
                {**_state("RUNNING", 0), "timestamp": "2026-01-02T03:04:05Z"},
                {**_state("COMPLETED", 0), "timestamp": "2026-01-02T03:04:05.000001Z"},
            ]),
            _item(FR, "4", states=[
                {**_state("RUNNING", 0), "timestamp": "0001-01-01T00:00:00Z"},
                {**_state("COMPLETED", 0), "timestamp": "9999-12-31T23:59:59.999999Z"},
            ]),
            _item(FR, "5", states=[_state("RUNNING", 1)]),
            _item(FR, "6", states=[_state("PENDING", 1), _state("RUNNING", 2),
                                   _state("CANCELLED", 3)]),
        ],
        "rules that may intervene": [
            _item(FR, "0", states=[_state("RUNNING", 1), _state("FAILED", 2)]),
            _item(FR, "1", states=[_state("RUNNING", 1), _state("COMPLETED", 2),
                                   _state("RUNNING", 3)]),
            _item(FR, "2", states=[_state("SCHEDULED", 1)]),
            _item(FR, "3", states=[_state("RUNNING", 1), _state("CANCELLING", 2),
                                   _state("RUNNING", 3)]),
        ],
    }  # fmt: skip


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
@pytest.mark.parametrize("case", list(_cases()))
def test_plain_rows_are_the_validated_rows(clock: Any, dialect: str, case: str) -> None:
    items = _cases()[case]
    made = _rows_both_ways(clock, dialect, _body(items))
    assert made is not None, "the plain reader takes these bodies"
    if case == "rules that may intervene":
        assert made == [None, None, None, None]
    else:
        assert None not in made


def test_a_repeated_key_is_read_as_the_validated_path_reads_it(clock: Any) -> None:
    """JSON objects with a key twice: both readers keep the last value."""
    item = json.dumps(_item(FR, "0"))[1:-1]
    body = f'[{{"name": 5, "states": [{{"type": "BOGUS"}}], {item}}}]'.encode()
    made = _rows_both_ways(clock, "sqlite", body)
    assert made is not None and made[0] is not None
    assert parse_plain_creates(f'[{{{item}, "name": 5}}]'.encode()) is None


def test_a_repeated_transition_id_is_left_to_the_validated_path(clock: Any) -> None:
    running = _state("RUNNING", 1)
    again = {**_state("COMPLETED", 2), "state_details": running["state_details"]}
    made = _rows_both_ways(clock, "sqlite", _body([_item(FR, "0", states=[running, again])]))
    assert made == [None]


def test_remembered_rule_checks_are_plain_write() -> None:
    for current, to in itertools.product(StateType, StateType):
        proposed = WireState(type=to)
        expected = to != StateType.SCHEDULED and plain_write(
            "task", current, proposed, force=False, slots=None
        )
        assert plain_creates._writes_plainly(current, to) is expected, (current, to)


@pytest.mark.parametrize(
    "body",
    [
        [{**_item(FR, "0"), "cache_key": "c"}],
        [{**_item(FR, "0"), "state": _state("PENDING", 0)}],
        [{**_item(FR, "0"), "empirical_policy": {"retries": 1}}],
        [{**_item(FR, "0"), "id": str(uuid.uuid4()).upper()}],
        [{**_item(FR, "0"), "id": uuid.uuid4().hex}],
        [_item(FR, "0", states=[{**_state("RUNNING", 1), "timestamp": "2026-01-02T03:04+00:00"}])],
        [_item(FR, "0", states=[{**_state("RUNNING", 1), "timestamp": "2026-01-02T03:04:05.0Z"}])],
        [_item(FR, "0", states=[{**_state("RUNNING", 1), "message": "NaN"}])],
        [_item(FR, "0", states=[{**_state("RUNNING", 1), "extra": 1}])],
        [_item(FR, "0", states=[{**_state("RUNNING", 1), "data": {"storage_key": "k"}}])],
        [_item(FR, "0", states=[_state("RUNNING", 1, cache_key="c")])],
        [_item(FR, "0", states=[_state("COMPLETED", 2), _state("RUNNING", 1)])],
        [_item(FR, "0", states=[_state("RUNNING", 1)] * 101)],
        [_item(FR, "0"), {**_item(FR, "1"), "bogus": 1}],
        {"not": "a list"},
    ],
)  # fmt: skip
def test_other_bodies_are_left_to_the_validated_path(body: Any) -> None:
    assert parse_plain_creates(_body(body)) is None


# every field of the reporter's item replaced by each junk value, one at a time
_JUNK: list[Any] = [
    None, -1, 0, 10**30, 1.5, -0.0, "", "x", "\u0000", "NaN", "RUNNING", [], {}, [None], {"": None},
    "not-a-uuid", str(uuid.uuid4()), str(uuid.uuid4()).upper(), "2026-01-02T03:04:05Z",
    "2026-02-30T00:00:00Z", "2026-01-02T03:04:05.1Z", True, False,
]  # fmt: skip


def _mutations(body: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    items = body.items() if isinstance(body, dict) else enumerate(body)
    for key, value in list(items):
        for junk in _JUNK:
            mutated = copy.deepcopy(body)
            mutated[key] = junk
            yield (*path, key), mutated
        if isinstance(value, dict | list):
            for where, inner in _mutations(value, (*path, key)):
                mutated = copy.deepcopy(body)
                mutated[key] = inner
                yield where, mutated


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_junk_in_any_field_is_read_the_same_way(clock: Any, dialect: str) -> None:
    """Whatever the plain reader takes, the validated path takes too, with the same rows."""
    template = [_item(FR, "0", task_inputs={"x": [{"input_type": "task_run", "id": FR}]})]
    taken = 0
    for where, body in _mutations(template):
        content = json.dumps(body).encode()
        try:
            made = _rows_both_ways(clock, dialect, content)
        except RequestValidationError as exc:  # pragma: no cover - the failure to report
            raise AssertionError(f"plain took a body the validated path refuses: {where}") from exc
        taken += made is not None
    assert taken > 50  # many junk values are valid somewhere (names, keys, nulls)


# ------------------------------------------------------------------ over HTTP


async def _flow_run(client: httpx.AsyncClient) -> str:
    r = await client.post("/api/flow_runs/", json={"flow_name": "plain"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _stored(app: FastAPI) -> list[list[Any]]:
    """Every task run and history row, in a stable order (history by run, then seq)."""
    db = app.state.db
    async with db.read() as conn:
        runs = (await conn.exec_driver_sql("SELECT * FROM task_run ORDER BY id")).all()
        history = (
            await conn.exec_driver_sql(
                "SELECT task_run_id, type, name, timestamp, transition_id, state "
                "FROM task_run_state ORDER BY task_run_id, seq"
            )
        ).all()
    return [[tuple(r) for r in runs], [tuple(r) for r in history]]


async def _delete_task_runs(app: FastAPI) -> None:
    async with app.state.db.write() as conn:
        await conn.exec_driver_sql("DELETE FROM task_run_state")
        await conn.exec_driver_sql("DELETE FROM task_run")


@pytest.mark.anyio
async def test_the_route_stores_what_the_validated_path_stores(
    app: FastAPI, client: httpx.AsyncClient, clock: Any
) -> None:
    """The same body, once through the validated path (full answers) and once through
    the plain one (`?answer=minimal`): the same rows, and the minimal answers the
    validated path gives (null, or the run as stored)."""
    fr = await _flow_run(client)
    r = await client.post("/api/concurrency_limits/", json={"tag": "lim", "concurrency_limit": 9})
    assert r.status_code == 201, r.text
    items = [_item(fr, str(i)) for i in range(5)]
    items += [
        _item(fr, "tagged", tags=["lim"]),  # a limited tag: built the validated way
        _item(fr, "free", tags=["free"]),
        _item(fr, "failed", states=[_state("RUNNING", 1), _state("FAILED", 2)]),
        _item(fr, "again",
              states=[_state("RUNNING", 1), _state("COMPLETED", 2), _state("RUNNING", 3)]),
        _item(None, "autonomous"),
        {k: v for k, v in _item(fr, "no id").items() if k != "id"},
    ]  # fmt: skip
    items.append({**items[0], "dynamic_key": "same id"})  # a repeated id: a replay
    body = _body(items)
    stored, answers = [], []
    for path in ("/api/task_runs/bulk", "/api/task_runs/bulk?answer=minimal"):
        clock()
        r = await client.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 201, r.text
        answers.append(r.json())
        stored.append(await _stored(app))
        await _delete_task_runs(app)
    assert stored[0] == stored[1]
    assert len(stored[0][0]) == len(items) - 1 and len(stored[0][1]) >= 3 * (len(items) - 1)
    full, minimal = answers
    expected = [None] * 5 + [full[5], None, None, full[8], None, None, full[11]]
    assert minimal == expected
    assert full[5]["state_type"] == "COMPLETED" and full[8]["state_name"] == "Completed"


@pytest.mark.anyio
async def test_a_replayed_request_answers_as_before(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """A request sent again (its answer lost) changes nothing and answers the runs as
    stored, as the validated path does."""
    fr = await _flow_run(client)
    items = [_item(fr, str(i)) for i in range(3)]
    r = await client.post("/api/task_runs/bulk?answer=minimal", json=items)
    assert r.status_code == 201 and r.json() == [None, None, None], r.text
    before = await _stored(app)
    again = await client.post("/api/task_runs/bulk?answer=minimal", json=items)
    assert again.status_code == 201, again.text
    assert await _stored(app) == before
    full = await client.post("/api/task_runs/bulk", json=items)  # the validated path
    assert again.json() == full.json()
    assert [run["state_name"] for run in full.json()] == ["Completed"] * 3


@pytest.mark.anyio
@pytest.mark.parametrize(
    "change",
    [
        {"name": ""}, {"name": 5}, {"task_key": None}, {"id": "not-a-uuid"}, {"bogus": 1},
        {"flow_run_id": str(uuid.uuid4())}, {"tags": "a"}, {"empirical_policy": {"retries": -1}},
        {"states": [{"type": "BOGUS", "timestamp": _ts(0)}]},
        {"states": [_state("COMPLETED", 2), _state("RUNNING", 1)]},
        {"states": [_state("RUNNING", 1)] * 101},
        {"states": [{**_state("RUNNING", 1), "timestamp": "2026-02-30T00:00:00Z"}]},
        {"task_inputs": {"x": [{"input_type": "nope"}]}},
    ],
)  # fmt: skip
async def test_bad_items_get_the_validated_paths_errors(
    client: httpx.AsyncClient, change: dict[str, Any]
) -> None:
    fr = await _flow_run(client)
    items = [_item(fr, "0"), {**_item(fr, "1"), **change}]
    answers = [
        await client.post(path, json=items)
        for path in ("/api/task_runs/bulk?answer=minimal", "/api/task_runs/bulk")
    ]
    assert answers[0].status_code in (404, 422), answers[0].text
    assert [a.status_code for a in answers] == [answers[0].status_code] * 2
    assert answers[0].json() == answers[1].json()
    # nothing was written
    listed = await client.post("/api/task_runs/filter", json={"flow_run_id": fr})
    assert listed.json() == []


@pytest.mark.anyio
async def test_bodies_that_are_not_json_lists_get_the_same_errors(
    client: httpx.AsyncClient,
) -> None:
    junk = [b"", b"[{", b"{}", b"null", b"[1]", b'[{"name": NaN}]', b"\xff\xfe\x00"]
    for content in (*junk, b"[" * 5000 + b"]" * 5000):
        answers = [
            await client.post(path, content=content, headers={"content-type": "application/json"})
            for path in ("/api/task_runs/bulk?answer=minimal", "/api/task_runs/bulk")
        ]
        assert answers[0].status_code == 422, (content, answers[0].text)
        assert answers[0].json() == answers[1].json()
