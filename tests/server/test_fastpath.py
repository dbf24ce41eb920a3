"""The hot paths' shortcuts agree with the slow, obvious code they replace.

- `fastpath.plain_write` + `orchestration.bookkeeping` vs `orchestrate()`, over every
  combination of run kind, current and proposed state type, force, cache key
  and concurrency slots;
- the wire twins vs `State`/`StateReport`/`TaskRunCreate` (same JSON, same errors);
- the driver-ready encodings vs SQLAlchemy's and pydantic's.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import uuid

import pydantic
import pytest
import sqlalchemy as sa
from pydantic import TypeAdapter
from sqlalchemy.dialects import sqlite

from prefray.schemas import EmpiricalPolicy, StateReport, TaskRunCreate
from prefray.server.database.fastpath import plain_write
from prefray.server.database.fastsql import codec_for, iso_json, json_text
from prefray.server.database.wire import (
    STATE_REPORTS,
    TASK_RUN_CREATES,
    WireState,
    parse_body,
    state_json,
)
from prefray.server.orchestration import RunSnapshot, SlotCounts, bookkeeping, orchestrate
from prefray.states import State, StateDetails, StateType

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
CURRENT = [None, *StateType]
DETAILS = [
    {},
    {"cache_key": "k"},
    {"cache_key": "k", "refresh_cache": True},
    {"retriable": False, "scheduled_time": T0 + dt.timedelta(hours=1)},
]
SLOTS = [None, SlotCounts({}, {}), SlotCounts({"gpu": 1}, {"gpu": 1}), SlotCounts({"x": 0}, {})]


def _current(state_type: StateType | None) -> State | None:
    if state_type is None:
        return None
    details = StateDetails(scheduled_time=T0 + dt.timedelta(hours=2))
    return State(type=state_type, timestamp=T0, state_details=details)


def test_plain_write_agrees_with_orchestrate() -> None:
    shortcuts = set()
    combos = itertools.product(
        ("task", "flow"), CURRENT, StateType, (False, True), DETAILS, SLOTS, (0, 1, 3)
    )
    for kind, current_type, to, force, details, slots, run_count in combos:
        proposed = State(
            type=to,
            timestamp=T0 + dt.timedelta(seconds=5),
            state_details=StateDetails(**details),
        )
        if not plain_write(kind, current_type, proposed, force=force, slots=slots):
            continue
        shortcuts.add((kind, current_type, to))
        run = RunSnapshot(
            kind=kind,
            state=_current(current_type),
            run_count=run_count,
            empirical_policy=EmpiricalPolicy(retries=2),
            start_time=T0 if run_count else None,
            total_run_time=1.5,
        )
        cached = State(type=StateType.COMPLETED, name="Cached") if details else None
        decision = orchestrate(
            run, proposed, force=force, now=T0, cached=cached, slots=slots, jitter=lambda f: 1.0
        )
        where = (kind, current_type, to, force, details, slots, run_count)
        assert decision.result.status.value == "ACCEPT", where
        assert decision.result.state is proposed and decision.new_state is proposed, where
        expected = bookkeeping(
            current_type, T0 if current_type else None, run_count, run.start_time, None, 1.5,
            proposed,
        )  # fmt: skip
        assert decision.updates == expected, where
    # the shortcut covers the common path, and none of the rules' own cases
    assert ("task", StateType.PENDING, StateType.RUNNING) in shortcuts
    assert ("task", StateType.RUNNING, StateType.COMPLETED) in shortcuts
    assert ("task", None, StateType.PENDING) in shortcuts


def test_plain_write_refuses_what_a_rule_decides() -> None:
    running = State(type=StateType.RUNNING)
    assert not plain_write("task", StateType.COMPLETED, running, force=False, slots=None)
    assert not plain_write("task", StateType.SCHEDULED, running, force=False, slots=None)
    cached = State(type=StateType.RUNNING, state_details=StateDetails(cache_key="k"))
    assert not plain_write("task", StateType.PENDING, cached, force=False, slots=None)
    limited = SlotCounts({"gpu": 1}, {"gpu": 0})
    assert not plain_write("task", StateType.PENDING, running, force=False, slots=limited)
    failed = State(type=StateType.FAILED)
    assert not plain_write("task", StateType.RUNNING, failed, force=False, slots=None)
    assert plain_write("task", StateType.RUNNING, failed, force=True, slots=None)


STATES = [
    {"type": "RUNNING"},
    {"type": "COMPLETED", "name": "Cached", "message": "m", "data": {"storage_key": "k"}},
    {"type": "SCHEDULED", "timestamp": "2024-01-01T00:00:00+02:00",
     "state_details": {"scheduled_time": "2024-01-01T00:00:00.5Z", "cache_key": "c"}},
    {"type": "PAUSED", "id": str(uuid.uuid4()), "timestamp": "2024-01-01T00:00:00",
     "state_details": {"pause_key": "p", "run_input_keyset": {"a": "b"}}, "extra": 1},
]  # fmt: skip


@pytest.mark.parametrize("raw", STATES)
def test_wire_state_dumps_like_state(raw: dict[str, object]) -> None:
    wire = state_json(WireState.model_validate(raw))
    real = State.model_validate(raw).model_dump(mode="json")
    for generated in ("id", "timestamp"):
        if generated not in raw:
            wire.pop(generated), real.pop(generated)
    assert wire == real


def test_wire_bodies_validate_like_the_models() -> None:
    run_id = str(uuid.uuid4())
    fixed = {"id": str(uuid.uuid4()), "timestamp": "2024-01-01T00:00:00Z"}
    good = [{"task_run_id": run_id, "state": {**fixed, **s}, "force": True} for s in STATES]
    body = json.dumps(good).encode()
    wire = parse_body(STATE_REPORTS, body)
    real = TypeAdapter(list[StateReport]).validate_json(body)
    assert [state_json(w.state) for w in wire] == [r.state.model_dump(mode="json") for r in real]
    bad_bodies = [
        [{"task_run_id": "x", "state": {"type": "BOGUS"}}],
        [{"task_run_id": run_id, "state": {"type": "RUNNING"}, "bogus": 1}],
        [{"task_run_id": run_id}],
    ]
    for bad in bad_bodies:
        with pytest.raises(pydantic.ValidationError) as real_error:
            TypeAdapter(list[StateReport]).validate_python(bad)
        with pytest.raises(Exception) as wire_error:
            parse_body(STATE_REPORTS, json.dumps(bad).encode())
        locs = [("body", *e["loc"]) for e in real_error.value.errors()]
        assert [e["loc"] for e in wire_error.value.errors()] == locs  # type: ignore[attr-defined]
    create = {"name": "t", "task_key": "k", "dynamic_key": "0",
              "empirical_policy": {"retry_delay": -1}}  # fmt: skip
    with pytest.raises(Exception, match="retry delays"):
        parse_body(TASK_RUN_CREATES, json.dumps([create]).encode())
    with pytest.raises(pydantic.ValidationError):
        TaskRunCreate.model_validate(create)


def test_encodings_match_sqlalchemy_and_pydantic() -> None:
    codec = codec_for("sqlite")
    dialect = sqlite.dialect()
    as_text = sa.DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert as_text is not None
    plus2 = dt.timezone(dt.timedelta(hours=2))
    for value in (T0, T0.replace(microsecond=7), dt.datetime(2024, 1, 1, 3, tzinfo=plus2)):
        naive_utc = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        assert codec.ts(value) == as_text(naive_utc)
        assert codec.ts_out(codec.ts(value)) == value
        assert iso_json(value) == TypeAdapter(dt.datetime).dump_python(value, mode="json")
    assert codec.ts(dt.datetime(2024, 1, 1)) == "2024-01-01 00:00:00.000000"  # naive is UTC
    run_id = uuid.uuid4()
    assert codec.uuid(run_id) == sa.Uuid().dialect_impl(dialect).bind_processor(dialect)(run_id)
    assert codec_for("postgresql").uuid(run_id) is run_id
    assert json.loads(json_text({"a": ["NaN", "é"], "b": 1.5})) == {"a": ["NaN", "é"], "b": 1.5}
    with pytest.raises(sa.exc.StatementError, match="NaN"):
        json_text({"a": float("nan")})
