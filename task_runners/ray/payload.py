"""What travels between the driver and a Ray worker for one task run.

A submission is `execute([shared_key, shared, spec], *upstream_values)`: one
list for what is not an ObjectRef (each top-level argument costs Ray's
`.remote()` ~10-15 µs on the driver), then the refs.

- `shared_key`, `shared`: the Task object, the settings snapshot and what is
  the same for every run of the flow run (`Shared`), pickled once on the
  driver and unpickled once per worker process (cached by `shared_key`),
  however many runs of a map use them. Small payloads travel inline as bytes
  in the list; large ones (a task whose function holds big data) are put in
  the object store once and passed by reference as the first top-level
  argument (`shared` is then None): a reference nested inside an argument
  would cost Ray a borrower registration per call (about 0.3 ms here);
- `spec`: what is particular to this run (`encode_spec`), as a plain list of
  str/bytes/int/dict/list, which Ray packs with msgpack instead of pickle (a
  pickled `TaskRun` model cost ~0.1 ms per submission on the driver and as
  much again on the worker). Its parameters carry an `Upstream` placeholder
  wherever an upstream future was;
- `upstream_values`: one top-level ObjectRef per upstream future, so Ray runs
  the task after its upstreams and moves their values worker to worker.

A worker returns `(result, value)`. `result` is small and msgpack-friendly
(`encode_result`): the transitions the engine made, each state as a short
list, for the driver to ship to the API in its batches, and the final state.
The value object is the task's return value when it completed, or a
`NotCompleted` marker carrying its final state (then the downstream is
NotReady, or, through `allow_failure`, receives the exception).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import traceback
import uuid
from typing import Any

from prefray.schemas import EmpiricalPolicy, TaskRun, TaskRunInput
from prefray.states import (
    DETAILS_DEFAULTS,
    QUICK_STATES,
    ResultReference,
    State,
    StateDetails,
    StateType,
    build_valid_state,
)
from prefray.utilities.ids import uuid_from_int
from prefray.utilities.models import construct, copy_with

__all__ = [
    "NotCompleted",
    "RemoteTraceback",
    "Shared",
    "Upstream",
    "decode_result",
    "decode_spec",
    "encode_completed",
    "encode_result",
    "encode_spec",
    "portable_exception",
    "restore_exception",
    "small_value",
    "with_run_template",
]

_UTC = dt.timezone.utc
_SCALARS = frozenset({float, bool, type(None)})
_SMALL_BYTES = 1024


@dataclasses.dataclass(frozen=True)
class Upstream:
    """Stands where an upstream future was; `index` is its top-level argument."""

    index: int
    task_run_id: uuid.UUID


@dataclasses.dataclass(frozen=True)
class Shared:
    """What every run of one task in one flow run has in common (pickled once)."""

    task: Any
    settings: Any
    flow_run_id: uuid.UUID | None
    flow_name: str | None
    log_prints: bool
    # made on the worker, once per payload (`with_run_template`): what every
    # decoded TaskRun of these runs starts from
    run_template: TaskRun | None = dataclasses.field(default=None, compare=False, repr=False)


@dataclasses.dataclass
class NotCompleted:
    """The value object of a run that did not complete: its final state."""

    state: State


# the spec: one run, driver -> worker -------------------------------------------------
def encode_spec(
    task_run: TaskRun,
    parameters: dict[str, Any],
    wait_for: list[Any] | None,
    upstream_ids: list[uuid.UUID],
    dynamic_index: int | None,
    run_count: int,
) -> list[Any]:
    inputs = task_run.task_inputs
    return [
        task_run.id.bytes,
        task_run.name,
        task_run.task_key,
        task_run.dynamic_key,
        list(task_run.tags),
        {k: [[i.input_type, _id_bytes(i.id)] for i in v] for k, v in inputs.items()}
        if inputs
        else None,
        run_count,
        parameters,
        wait_for,
        [u.bytes for u in upstream_ids],
        dynamic_index,
    ]


def decode_spec(
    spec: list[Any], shared: Shared
) -> tuple[TaskRun, dict[str, Any], list[Any] | None, list[uuid.UUID], int | None]:
    """(the run's `TaskRun`, parameters, wait_for, upstream ids, dynamic index)."""
    run_id, name, task_key, dynamic_key, tags, inputs, run_count, *rest = spec
    parameters, wait_for, upstream_ids, dynamic_index = rest
    task_inputs = (
        {k: [TaskRunInput(input_type=t, id=_uuid(i)) for t, i in v] for k, v in inputs.items()}
        if inputs
        else {}
    )
    # the values are what the driver's validated TaskRun held: no validation again
    per_run = {
        "id": _uuid_of(run_id),
        "name": name,
        "task_key": task_key,
        "dynamic_key": dynamic_key,
        "tags": tags,
        "task_inputs": task_inputs,
        "run_count": run_count,
    }
    template = shared.run_template
    if template is not None:  # what `_construct_run` builds, from the template
        task_run = copy_with(template, per_run)
    else:
        policy = getattr(shared.task, "empirical_policy", None) or EmpiricalPolicy()
        task_run = _construct_run(shared, policy, per_run)
    ids = [_uuid_of(u) for u in upstream_ids] if upstream_ids else []
    return task_run, parameters, wait_for, ids, dynamic_index


def with_run_template(shared: Shared) -> Shared:
    """`shared` with its `run_template`: `decode_spec` then copies it with the
    run's own fields instead of building the TaskRun field by field. Only for a
    task with its own policy (every run shares it, as `construct` would);
    otherwise `shared` as is."""
    policy = getattr(shared.task, "empirical_policy", None)
    if policy is None:
        return shared
    template = _construct_run(shared, policy, dict.fromkeys(_PER_RUN_FIELDS))
    return dataclasses.replace(shared, run_template=template)


_PER_RUN_FIELDS = ("id", "name", "task_key", "dynamic_key", "tags", "task_inputs", "run_count")


def _construct_run(shared: Shared, policy: EmpiricalPolicy, per_run: dict[str, Any]) -> TaskRun:
    return construct(TaskRun, flow_run_id=shared.flow_run_id, empirical_policy=policy, **per_run)


# the result: worker -> driver ----------------------------------------------------------
def encode_result(
    final: State,
    reports: list[Any],
    exception: Any,
    value: Any = None,
    run_id: uuid.UUID | None = None,
) -> list[Any]:
    """[reports, final state (None: the last report's), exception (pickled by Ray,
    rare), small value].

    `reports` are what the worker's `CollectingReporter` holds: (task_run_id,
    state, force) tuples become short lists, whose id is None when it is
    `run_id` (the run the driver submitted knows its own id); anything else (a
    creation) travels as the object itself. A completed run's value rides along
    when it is a small scalar (`small_value`): the driver then answers
    `.result()` without a `ray.get`; the value object stays in the store for
    downstream tasks."""
    encoded = [
        [
            None if r[0] is run_id or r[0] == run_id else r[0].bytes,
            encode_state(r[1]),
            r[2],
        ]
        if type(r) is tuple
        else r
        for r in reports
    ]
    last = reports[-1] if reports else None
    same = type(last) is tuple and last[1].id == final.id and _same_wire(last[1], final)
    return [encoded, None if same else encode_state(final), exception, value]


def encode_completed(final: State, reports: list[Any], run_id: uuid.UUID, value: Any) -> list[Any]:
    """`encode_result(final, reports, None, small_value(value), run_id)`, written
    out for a plain run's reports (its own Running and Completed, `final` a copy
    of the latter): one call instead of a dozen; any other shape goes to
    `encode_result`."""
    if len(reports) == 2:
        first, last = reports
        if (
            type(first) is tuple
            and type(last) is tuple
            and first[0] is run_id
            and last[0] is run_id
            and run_id is not None
        ):
            state = last[1]
            if state.id == final.id and _same_wire(state, final):
                encoded = [None, encode_state(first[1]), first[2]]
                return [
                    [encoded, [None, encode_state(state), last[2]]],
                    None,
                    None,
                    small_value(value),
                ]
    return encode_result(final, reports, None, small_value(value), run_id)


def small_value(value: Any) -> list[Any] | None:
    """`[value]` if it is a scalar cheap to carry (msgpack-native, at most
    `_SMALL_BYTES` long), else None."""
    kind = type(value)
    if kind is int:  # msgpack packs 64 bits at most
        return [value] if -(2**63) <= value < 2**64 else None
    if kind in _SCALARS:
        return [value]
    if kind in (str, bytes) and len(value) <= _SMALL_BYTES:
        return [value]
    return None


def decode_result(
    result: list[Any], state_cls: type[State] = State, run_id: uuid.UUID | None = None
) -> tuple[State, list[Any], list[Any] | None]:
    """(final state as `state_cls`, reports for the driver's `StateReporter.extend`,
    `[value]` when the value rode along, else None). `run_id` is the submitted
    run's id, which its own reports leave out (see `encode_result`).

    The final state is most often the last report's state: it is decoded once,
    as `state_cls`, and the same object is both reported and returned."""
    encoded, final, exception, value = result
    reports: list[Any] = []
    last = len(encoded) - 1
    out: State | None = None
    run_uuid: uuid.UUID | None = run_id
    run_bytes: bytes | None = None
    for i, item in enumerate(encoded):
        if type(item) is list:
            item_id, state, force = item
            if item_id is None:
                if run_id is None:
                    raise ValueError("a Ray worker reported for its run, whose id is not known")
                item_uuid = run_id
            else:
                if item_id != run_bytes:  # another run's reports: rare
                    run_uuid, run_bytes = _uuid_of(item_id), item_id
                item_uuid = run_uuid
            if i == last and final is None:
                out = decode_state(state, state_cls)
                reports.append((item_uuid, out, force))
            else:
                reports.append((item_uuid, decode_state(state), force))
        else:
            reports.append(item)
    if out is None:
        if final is None:
            raise ValueError("a Ray worker returned no final state for its task run")
        out = decode_state(final, state_cls)
    if exception is not None:
        out.with_exception(restore_exception(exception))
    return out, reports, value


def encode_state(state: State) -> list[Any]:
    details = state.state_details.__dict__
    changed = (
        None
        if details == DETAILS_DEFAULTS  # the common case, one C comparison
        else {k: v for k, v in details.items() if v != DETAILS_DEFAULTS[k]}
    )
    data = state.data
    return [
        _TYPE_VALUES[state.type],  # not `.value`: the enum's descriptor costs ~0.4 µs
        state.name,
        state.message,
        state.timestamp.timestamp(),
        state.id.bytes,
        changed or None,
        data.model_dump() if data is not None else None,
    ]


def decode_state(encoded: list[Any], cls: type[State] = State) -> State:
    type_, name, message, timestamp, state_id, details, data = encoded
    if details or data is not None or not QUICK_STATES:  # rare (retries, caching, ...)
        return cls(
            id=uuid.UUID(bytes=state_id),
            type=StateType(type_),
            name=name,
            message=message,
            timestamp=dt.datetime.fromtimestamp(timestamp, _UTC),
            state_details=StateDetails(**details) if details else StateDetails(),
            data=ResultReference(**data) if data is not None else None,
        )
    # what validating these (our own encode_state's) values builds, without validating:
    # the monitor decodes two or three states per task run
    return build_valid_state(
        cls,
        _uuid_of(state_id),
        _STATE_TYPES[type_],
        name,
        message,
        _from_timestamp(timestamp, _UTC),
        _STATE_FIELDS,
    )


def _uuid_of(data: bytes) -> uuid.UUID:
    """`uuid.UUID(bytes=data)` without its argument checks (the monitor decodes two or
    three per task run); the same error for a wrong length."""
    if len(data) != 16:
        raise ValueError("bytes is not a 16-char string")
    return uuid_from_int(int.from_bytes(data, "big"))


_from_timestamp = dt.datetime.fromtimestamp
_STATE_TYPES = {t.value: t for t in StateType}
_TYPE_VALUES = {t: t.value for t in StateType}
_STATE_FIELDS = frozenset(State.model_fields)


def _same_wire(a: State, b: State) -> bool:
    return (
        a.type == b.type
        and a.name == b.name
        and a.message == b.message
        and a.data == b.data
        # the engine's final state is a shallow copy of the reported one: same details
        and (a.state_details is b.state_details or a.state_details == b.state_details)
    )


def _id_bytes(value: uuid.UUID | None) -> bytes | None:
    return None if value is None else value.bytes


def _uuid(value: bytes | None) -> uuid.UUID | None:
    return None if value is None else uuid.UUID(bytes=value)


# exceptions --------------------------------------------------------------------------
class RemoteTraceback(Exception):
    """Set as `__cause__` of an exception raised on a Ray worker: its traceback there."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def portable_exception(exc: BaseException) -> BaseException:
    """`exc` with its worker traceback kept as text, or a stand-in if it cannot pickle."""
    import cloudpickle

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        cloudpickle.dumps(exc)
        portable: BaseException = exc
    except Exception:
        portable = RuntimeError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
    portable.__dict__["_prefray_remote_tb"] = f'\n"""\n{text}"""'
    return portable


def restore_exception(exc: BaseException | None) -> BaseException | None:
    """On the driver: hang the worker's traceback on the exception as its cause."""
    if exc is None:
        return None
    text = exc.__dict__.pop("_prefray_remote_tb", None) if hasattr(exc, "__dict__") else None
    if text and exc.__cause__ is None:
        exc.__cause__ = RemoteTraceback(text)
    return exc
