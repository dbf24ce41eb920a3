"""Bulk task-run creations of the usual shape, read and turned into rows without models.

Nearly every item of `POST /api/task_runs/bulk?answer=minimal` is what the
reporter sends for a mapped task run that ran and finished: its ids, name and
keys, the default retry policy, and the states it went through (Running,
Completed) with default details. Validating such items into pydantic models,
then dumping their states back to text, cost more than storing them.

`parse_plain_creates` reads the body once (`pydantic_core.from_json`) and
accepts it only when *every* item has that shape, checked value by value:
exact JSON types, UUIDs and timestamps in the canonical text pydantic writes
(so the text stored is the text received), no unknown keys, states in time
order. For anything else it answers None and the route validates the body
the usual way, with the same 422s. `plain_row` then builds an item's run row
and history rows straight from those values, calling the same
`plain_write` and `bookkeeping` the validated path calls; when a rule could
intervene it answers None and the caller builds that item the validated
way. `tests/server/test_plain_creates.py` checks both give the same rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import typing
from typing import Any

import pydantic_core

from prefray.schemas import EmpiricalPolicy, TaskRunCreate, TaskRunInput
from prefray.server.database.fastpath import plain_write
from prefray.server.database.fastsql import Codec, codec_for, iso_json, json_text, json_ts_of_stored
from prefray.server.database.wire import DEFAULT_STATE_NAMES, MAX_BATCH, WireState, state_json
from prefray.server.orchestration import RunUpdates, bookkeeping
from prefray.states import StateDetails, StateType, now
from prefray.utilities.ids import uuid4

__all__ = [
    "EMPTY_UPDATES",
    "NewPending",
    "POLICY_TEXT",
    "PlainCreate",
    "PlainState",
    "parse_plain_creates",
    "plain_row",
]

_DEFAULT_POLICY = EmpiricalPolicy().model_dump(mode="json")
POLICY_TEXT = json_text(_DEFAULT_POLICY)  # the stored text of the default policy
EMPTY_UPDATES = RunUpdates(run_count=0, start_time=None, end_time=None, total_run_time=0.0)

# what pydantic writes for a UUID and for a UTC datetime (microseconds only when not 0)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?Z\Z")
_TYPES = {t.value: t for t in StateType}
# the fields each reader below knows what to do with: a field added to a model must be
# handled here too (or the plain reader would drop it), hence the checks
_CREATE_KEYS = frozenset(
    ("id", "name", "flow_run_id", "task_key", "dynamic_key", "cache_key", "cache_expiration",
     "tags", "task_inputs", "empirical_policy", "state", "states")
)  # fmt: skip
_STATE_KEYS = frozenset(("id", "type", "name", "message", "timestamp", "state_details", "data"))
_INPUT_KEYS = frozenset(("input_type", "id"))
_POLICY_KEYS = frozenset(("retries", "retry_delay", "retry_jitter_factor"))
assert _CREATE_KEYS == set(TaskRunCreate.model_fields)
assert _STATE_KEYS == set(WireState.model_fields)
assert _INPUT_KEYS == set(TaskRunInput.model_fields)
assert _POLICY_KEYS == set(EmpiricalPolicy.model_fields)
# (any detail but these must be null: the stored text is made from StateDetails' own)
_DETAILS_KEYS = frozenset(StateDetails.model_fields)
_INPUT_TYPES = frozenset(typing.get_args(TaskRunInput.model_fields["input_type"].annotation))
# details a plain state may set (the others must be null or absent)
_ID_DETAILS = ("flow_run_id", "task_run_id", "transition_id")
_FLAG_DETAILS = ("pause_reschedule", "untrackable_result")
# how `_plain_state` checks each detail: a UUID or null, a bool, or null
_ID, _FLAG, _NULL = "id", "flag", "null"
_DETAIL_CHECKS = {
    key: _ID if key in _ID_DETAILS else _FLAG if key in _FLAG_DETAILS else _NULL
    for key in _DETAILS_KEYS
}
_NO_DETAILS: dict[str, Any] = {}
_NO_TAGS: list[str] = []
_NO_INPUTS: dict[str, Any] = {}
_MAX_STATES = next(  # TaskRunCreate.states' max_length
    m.max_length for m in TaskRunCreate.model_fields["states"].metadata if hasattr(m, "max_length")
)


class PlainState:
    """A carried state of the plain shape: what its row and text are made of.

    `state_details` stands in for the details `plain_write` and `bookkeeping`
    read (a plain state has no cache key)."""

    __slots__ = (
        "flow_run_id", "id", "message", "name", "pause_reschedule", "text_ts", "timestamp",
        "transition_id", "type", "untrackable_result",
    )  # fmt: skip

    state_details = StateDetails()

    def __init__(
        self,
        kind: StateType,
        state_id: str,
        name: str | None,
        message: str | None,
        text_ts: str,
        timestamp: dt.datetime,
        details: dict[str, Any],
    ) -> None:
        # the values were checked by `_plain_state`
        self.type = kind
        self.id = state_id
        self.name: str = DEFAULT_STATE_NAMES[kind] if name is None else name
        self.message = message
        self.text_ts = text_ts
        self.timestamp = timestamp
        get = details.get
        self.flow_run_id: str | None = get("flow_run_id")
        self.transition_id: str | None = get("transition_id")
        self.pause_reschedule: bool = get("pause_reschedule", False)
        self.untrackable_result: bool = get("untrackable_result", False)


@dataclasses.dataclass(slots=True)
class PlainCreate:
    """A creation of the plain shape (no state, no cache key, the default policy)."""

    id: str | None
    name: str
    flow_run_id: str | None
    task_key: str
    dynamic_key: str
    tags: list[str]
    tags_text: str
    task_inputs_text: str
    states: list[PlainState]


def parse_plain_creates(body: bytes) -> list[PlainCreate] | None:
    """The body's creations, when every one is of the plain shape; else None."""
    try:
        items = pydantic_core.from_json(body, cache_strings="keys")
    except (ValueError, RecursionError):
        return None
    if type(items) is not list or len(items) > MAX_BATCH:
        return None
    out: list[PlainCreate] = []
    for i, item in enumerate(items):
        plain = _plain_create(item)
        if plain is None:
            return None
        items[i] = None  # its dicts go now: fewer objects alive for the collector
        out.append(plain)
    return out


def _is_uuid(value: Any) -> bool:
    return type(value) is str and _UUID.match(value) is not None


def _is_key(value: Any) -> bool:
    return type(value) is str and len(value) > 0


def _plain_create(item: Any) -> PlainCreate | None:
    if type(item) is not dict or not _CREATE_KEYS.issuperset(item):
        return None
    get = item.get
    run_id, flow_run_id, name = get("id"), get("flow_run_id"), get("name")
    task_key, dynamic_key = get("task_key"), get("dynamic_key")
    if (
        (run_id is not None and not _is_uuid(run_id))
        or (flow_run_id is not None and not _is_uuid(flow_run_id))
        or not (_is_key(name) and _is_key(task_key) and _is_key(dynamic_key))
        or get("cache_key") is not None
        or get("cache_expiration") is not None
        or get("state") is not None
        or not _default_policy(get("empirical_policy", _DEFAULT_POLICY))
    ):
        return None
    tags = get("tags", _NO_TAGS)
    if type(tags) is not list or (tags and any(type(tag) is not str for tag in tags)):
        return None
    inputs = get("task_inputs", _NO_INPUTS)
    if inputs:  # (an empty dict is stored as it is; anything else is checked)
        inputs = _task_inputs(inputs)
    elif type(inputs) is not dict:
        return None
    states = _plain_states(get("states"))
    if inputs is None or states is None:
        return None
    return PlainCreate(
        run_id, name, flow_run_id, task_key, dynamic_key, tags,
        json_text(tags) if tags else "[]", json_text(inputs) if inputs else "{}", states,
    )  # fmt: skip


def _default_policy(policy: Any) -> bool:
    """Whether `policy` validates to the default `EmpiricalPolicy`."""
    if type(policy) is not dict or not _POLICY_KEYS.issuperset(policy):
        return False
    retries = policy.get("retries", 0)
    delay = policy.get("retry_delay", 0.0)
    return (
        type(retries) is int
        and retries == 0
        and type(delay) in (int, float)
        and delay == 0
        and policy.get("retry_jitter_factor") is None
    )


def _task_inputs(inputs: Any) -> dict[str, list[dict[str, Any]]] | None:
    """The stored form of `task_inputs` (each input with both its fields), or None."""
    if type(inputs) is not dict:
        return None
    out: dict[str, list[dict[str, Any]]] = {}
    for key, values in inputs.items():
        if type(values) is not list:
            return None
        stored = []
        for value in values:
            if type(value) is not dict or not _INPUT_KEYS.issuperset(value):
                return None
            input_type, input_id = value.get("input_type", "task_run"), value.get("id")
            if type(input_type) is not str or input_type not in _INPUT_TYPES:
                return None
            if input_id is not None and not _is_uuid(input_id):
                return None
            stored.append({"input_type": input_type, "id": input_id})
        out[key] = stored
    return out


def _plain_states(states: Any) -> list[PlainState] | None:
    if states is None:
        return []
    if type(states) is not list or len(states) > _MAX_STATES:
        return None
    out: list[PlainState] = []
    for raw in states:
        state = _plain_state(raw)
        if state is None:
            return None
        if out and state.timestamp < out[-1].timestamp:
            return None  # out of order: the validated path answers the 422
        out.append(state)
    return out


def _plain_state(raw: Any) -> PlainState | None:
    if type(raw) is not dict or not _STATE_KEYS.issuperset(raw):
        return None
    get = raw.get
    state_id, kind, name, message = get("id"), get("type"), get("name"), get("message")
    timestamp = get("timestamp")
    if not (
        type(state_id) is str
        and _UUID.match(state_id) is not None
        and type(kind) is str
        and kind in _TYPES
        and (name is None or (type(name) is str and _plain_text(name)))
        and (message is None or (type(message) is str and _plain_text(message)))
        and type(timestamp) is str
        and _TIMESTAMP.match(timestamp) is not None
        and timestamp[19:26] != ".000000"  # written without its fraction
        and get("data") is None
    ):
        return None
    details = get("state_details", _NO_DETAILS)
    if type(details) is not dict:
        return None
    for key, value in details.items():
        check = _DETAIL_CHECKS.get(key)
        if check is _ID:
            if value is not None and (type(value) is not str or _UUID.match(value) is None):
                return None
        elif check is _FLAG:
            if type(value) is not bool:
                return None
        elif check is None or value is not None:
            return None  # an unknown key, or a detail a plain state leaves null
    try:
        when = dt.datetime.fromisoformat(timestamp[:-1] + "+00:00")
    except ValueError:
        return None
    return PlainState(_TYPES[kind], state_id, name, message, timestamp, when, details)


def _plain_text(value: str) -> bool:
    # a state whose text holds these is stored the strict encoder's way (`state_text`)
    return "NaN" not in value and "Infinity" not in value


# -------------------------------------------------------------------- texts
def _template(as_json: dict[str, Any], marks: dict[tuple[str, ...], str]) -> tuple[str, ...]:
    """`json_text(as_json)` cut around the values at `marks`' paths (in text order)."""
    for path, mark in marks.items():
        target = as_json
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = mark
    text = json_text(as_json)
    cuts: list[str] = []
    for mark in marks.values():
        before, text = text.split(json_text(mark))
        cuts.append(before)
    return (*cuts, text)


_D = "state_details"
_STATE_TEXT = _template(
    state_json(WireState(type=StateType.PENDING)),
    {
        ("id",): "\x01", ("type",): "\x02", ("name",): "\x03", ("message",): "\x04",
        ("timestamp",): "\x05", (_D, "flow_run_id"): "\x06", (_D, "task_run_id"): "\x07",
        (_D, "transition_id"): "\x08", (_D, "pause_reschedule"): "\x0e",
        (_D, "untrackable_result"): "\x0f",
    },
)  # fmt: skip
_TYPE_TEXT = {t: json_text(t.value) for t in StateType}
_TYPE_VALUE = {t: t.value for t in StateType}  # (an enum member's .value is a descriptor call)
_NAME_TEXT = {name: json_text(name) for name in DEFAULT_STATE_NAMES.values()}


def _quoted(value: str | None) -> str:
    return "null" if value is None else f'"{value}"'


def plain_state_text(state: PlainState, run_id: str, flow_run_id: str | None) -> str:
    """The stored text of `state` for task run `run_id` (`state_text` of its model, once
    the run's ids are filled in)."""
    a, b, c, d, e, f, g, h, i, j, k = _STATE_TEXT
    name = _NAME_TEXT.get(state.name) or json_text(state.name)
    message = "null" if state.message is None else json_text(state.message)
    return (
        f'{a}"{state.id}"{b}{_TYPE_TEXT[state.type]}{c}{name}{d}{message}{e}"{state.text_ts}"'
        f'{f}{_quoted(state.flow_run_id or flow_run_id)}{g}"{run_id}"{h}'
        f"{_quoted(state.transition_id)}{i}{'true' if state.pause_reschedule else 'false'}"
        f"{j}{'true' if state.untrackable_result else 'false'}{k}"
    )


class NewPending:
    """A new run's `Pending()`: its JSON, or that JSON's text, made on demand. The
    run's ids are `uuid.UUID`s or their canonical text."""

    __slots__ = ("flow_run_id", "id", "run_id", "timestamp")
    name = DEFAULT_STATE_NAMES[StateType.PENDING]

    def __init__(self, run_id: Any, flow_run_id: Any) -> None:
        self.run_id, self.flow_run_id = run_id, flow_run_id
        self.id = uuid4()
        self.timestamp = now()

    def as_json(self) -> dict[str, Any]:
        as_json = state_json(WireState(type=StateType.PENDING))
        as_json["id"] = str(self.id)
        as_json["timestamp"] = iso_json(self.timestamp)
        as_json["state_details"]["task_run_id"] = str(self.run_id)
        flow_run_id = self.flow_run_id
        as_json["state_details"]["flow_run_id"] = None if flow_run_id is None else str(flow_run_id)
        return as_json

    def as_text(self, stored_ts: Any = None) -> str:
        """The text of `as_json()`; `stored_ts`: its timestamp as a `Codec` stores it
        (spares formatting it again), if at hand."""
        a, b, c, d, e, f, g, h, i, j, k = _STATE_TEXT
        flow = _quoted(None if self.flow_run_id is None else str(self.flow_run_id))
        if type(stored_ts) is str:
            when = json_ts_of_stored(stored_ts)
        else:
            when = iso_json(self.timestamp)
        return (
            f'{a}"{self.id}"{b}{_TYPE_TEXT[StateType.PENDING]}{c}{_NAME_TEXT[self.name]}{d}null'
            f'{e}"{when}"{f}{flow}{g}"{self.run_id}"{h}null{i}false{j}false{k}'
        )


_sample = NewPending(uuid4(), uuid4())
assert _sample.as_text() == json_text(_sample.as_json())
assert _sample.as_text(codec_for("sqlite").ts(_sample.timestamp)) == _sample.as_text()
_sample.flow_run_id = None
assert _sample.as_text() == json_text(_sample.as_json())
del _sample


# --------------------------------------------------------------------- rows
_WRITES: dict[tuple[StateType, StateType], bool] = {}
_RUNNING, _COMPLETED = StateType.RUNNING, StateType.COMPLETED


def _writes_plainly(current: StateType, to: StateType) -> bool:
    """Whether a plain state of type `to` over a run in `current` is written as it is
    (`plain_write` of it, remembered: a plain state's details are always the same,
    without a cache key); never for a Scheduled state (its time may be kept)."""
    known = _WRITES.get((current, to))
    if known is None:
        proposed = WireState(type=to)
        assert proposed.state_details == PlainState.state_details
        known = _WRITES[(current, to)] = to != StateType.SCHEDULED and plain_write(
            "task", current, proposed, force=False, slots=None
        )
    return known


def plain_row(
    codec: Codec, item: PlainCreate, stamp: Any
) -> tuple[tuple[Any, ...], list[tuple[Any, ...]], bool] | None:
    """`item`'s run row, its history rows and whether its states were written with it,
    as `task_runs._row` makes them for a run created at `stamp` (as stored); None when
    a rule could intervene in its states (a Scheduled time to keep, a repeated
    transition id, a rule that may not ACCEPT) or a tag of it has a concurrency limit
    (the caller checks tags before)."""
    states = item.states
    if len(states) == 2:  # the usual pair (Running, Completed)
        first, second = states
        tid = first.transition_id
        if (
            not _writes_plainly(StateType.PENDING, first.type)
            or not _writes_plainly(first.type, second.type)
            or (tid is not None and tid == second.transition_id)
        ):
            return None
    else:
        current: StateType = StateType.PENDING
        seen: set[str] = set()
        for state in states:
            transition_id = state.transition_id
            if transition_id in seen or not _writes_plainly(current, state.type):
                return None
            current = state.type
            if transition_id is not None:
                seen.add(transition_id)
    if item.id is None:
        run_uuid = uuid4()
        run_id, key = str(run_uuid), codec.uuid(run_uuid)
    else:
        run_id, key = item.id, codec.uuid_text(item.id)
    pending = NewPending(run_id, item.flow_run_id)
    if len(states) == 2 and states[0].type is _RUNNING and states[1].type is _COMPLETED:
        # `bookkeeping` of Pending -> Running -> Completed, spelled out (no cache key)
        start, end = states[0].timestamp, states[1].timestamp
        run_count, total_run_time = 1, 0.0 + max(0.0, (end - start).total_seconds())
    else:
        current, timestamp, updates = StateType.PENDING, pending.timestamp, EMPTY_UPDATES
        for state in states:
            updates = bookkeeping(
                current, timestamp, updates.run_count, updates.start_time, updates.end_time,
                updates.total_run_time, state,
            )  # fmt: skip
            current, timestamp = state.type, state.timestamp
        run_count, total_run_time = updates.run_count, updates.total_run_time
        start, end = updates.start_time, updates.end_time
    expected = codec.ts(pending.timestamp)
    history = [(key, "PENDING", pending.name, expected, None, pending.as_text(expected))]
    stored_ts = {id(pending.timestamp): expected}
    for state in states:
        text_ts = stored_ts[id(state.timestamp)] = codec.ts_of_json(state.text_ts, state.timestamp)
        text = plain_state_text(state, run_id, item.flow_run_id)
        tid = None if state.transition_id is None else codec.uuid_text(state.transition_id)
        history.append((key, _TYPE_VALUE[state.type], state.name, text_ts, tid, text))
    last = history[-1]
    values = (
        key, item.name, None if item.flow_run_id is None else codec.uuid_text(item.flow_run_id),
        item.task_key, item.dynamic_key, None, None, item.tags_text, item.task_inputs_text,
        POLICY_TEXT, last[5], last[1], last[2], run_count, expected,
        None if start is None else stored_ts[id(start)],
        None if end is None else stored_ts[id(end)],
        total_run_time, stamp, stamp,
    )  # fmt: skip
    return values, history, bool(item.states)
