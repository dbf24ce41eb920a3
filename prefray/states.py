"""The state model: what a flow run or task run is doing, as data.

A `State` is both the in-process object the engine works with and the wire
schema shared by client and server. Its JSON form carries `type`, `name`,
`message`, `timestamp`, `state_details` and `data` (a result *reference*, never
the value). In process, a state may also hold the live return value or the
exception of the run in private attributes; those are pickled along with the
state (so they cross Ray and thread boundaries) but never sent to the API.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from prefray.utilities.ids import uuid4

__all__ = [
    "AwaitingRetry",
    "Cached",
    "Cancelled",
    "Cancelling",
    "Completed",
    "Crashed",
    "Failed",
    "Paused",
    "Pending",
    "ResultReference",
    "Retrying",
    "Running",
    "Scheduled",
    "State",
    "StateDetails",
    "StateType",
    "Suspended",
    "TERMINAL_TYPES",
    "now",
]


_UTC = dt.timezone.utc
_datetime_now = dt.datetime.now


def now() -> dt.datetime:
    """The current time, timezone-aware in UTC (every timestamp prefray writes)."""
    return _datetime_now(_UTC)


class StateType(str, enum.Enum):
    SCHEDULED = "SCHEDULED"  # waiting for a time to come (first run, retry, resume)
    PENDING = "PENDING"  # created, or waiting on upstreams; not started
    RUNNING = "RUNNING"  # user code is executing
    COMPLETED = "COMPLETED"  # finished with a result (terminal)
    FAILED = "FAILED"  # user code raised, or timed out (terminal unless retried)
    CANCELLED = "CANCELLED"  # stopped on request (terminal)
    CRASHED = "CRASHED"  # the process/worker running it died or was interrupted (terminal)
    PAUSED = "PAUSED"  # a flow run waiting to be resumed (pause or suspend)
    CANCELLING = "CANCELLING"  # cancellation requested, not yet confirmed


TERMINAL_TYPES = frozenset(
    {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED}
)


class ResultReference(BaseModel):
    """Where a persisted result lives: the only form of a result the API stores."""

    model_config = ConfigDict(extra="forbid")

    storage_key: str
    storage_path: str | None = None  # the storage block's base path at write time
    serializer: str = "pickle"


class StateDetails(BaseModel):
    model_config = ConfigDict(extra="ignore")

    flow_run_id: uuid.UUID | None = None
    task_run_id: uuid.UUID | None = None
    child_flow_run_id: uuid.UUID | None = None
    scheduled_time: dt.datetime | None = None
    cache_key: str | None = None
    cache_expiration: dt.datetime | None = None
    refresh_cache: bool | None = None
    # set by the engine when a failure must not be retried (retry_condition_fn,
    # a crash of the driver itself)
    retriable: bool | None = None
    # client-generated; proposing the same transition twice changes nothing
    transition_id: uuid.UUID | None = None
    pause_timeout: dt.datetime | None = None
    pause_reschedule: bool = False
    pause_key: str | None = None
    run_input_keyset: dict[str, str] | None = None
    # JSON schema the input of resume must match (pause/suspend with wait_for_input)
    run_input_schema: dict[str, Any] | None = None
    untrackable_result: bool = False


class State(BaseModel):
    """A state of a flow run or task run.

    >>> s = Completed(message="done")
    >>> s.is_completed(), s.name
    (True, 'Completed')
    """

    model_config = ConfigDict(extra="ignore")

    id: uuid.UUID = Field(default_factory=uuid4)
    type: StateType
    name: str | None = None
    message: str | None = None
    timestamp: dt.datetime = Field(default_factory=now)
    state_details: StateDetails = Field(default_factory=StateDetails)
    data: ResultReference | None = None

    # in-process only: the run's return value / exception (pickled, never sent)
    _value: Any = PrivateAttr(default=None)
    _has_value: bool = PrivateAttr(default=False)
    _exception: BaseException | None = PrivateAttr(default=None)

    def model_post_init(self, __context: Any) -> None:
        if self.name is None:
            self.name = _default_name(self.type)

    # predicates ------------------------------------------------------------
    def is_scheduled(self) -> bool:
        return self.type == StateType.SCHEDULED

    def is_pending(self) -> bool:
        return self.type == StateType.PENDING

    def is_running(self) -> bool:
        return self.type == StateType.RUNNING

    def is_completed(self) -> bool:
        return self.type == StateType.COMPLETED

    def is_failed(self) -> bool:
        return self.type == StateType.FAILED

    def is_crashed(self) -> bool:
        return self.type == StateType.CRASHED

    def is_cancelled(self) -> bool:
        return self.type == StateType.CANCELLED

    def is_cancelling(self) -> bool:
        return self.type == StateType.CANCELLING

    def is_paused(self) -> bool:
        return self.type == StateType.PAUSED

    def is_final(self) -> bool:
        return self.type in TERMINAL_TYPES

    # in-process payload ----------------------------------------------------
    def with_value(self, value: Any) -> State:
        """Attach the run's return value (in process only) and return self."""
        private = self.__pydantic_private__
        if private is None:
            self._value = value
            self._has_value = True
        else:
            private["_value"] = value
            private["_has_value"] = True
        return self

    def with_exception(self, exc: BaseException) -> State:
        """Attach the exception that ended the run (in process only) and return self."""
        self._exception = exc
        return self

    # (read from the private dict directly: pydantic's __getattr__ is slow for these)
    @property
    def has_value(self) -> bool:
        private = self.__pydantic_private__
        return bool(private.get("_has_value")) if private is not None else False

    @property
    def held_value(self) -> Any:
        """The value attached with `with_value` (None when there is none: see
        `has_value`); `result()` is the public way to the value."""
        private = self.__pydantic_private__
        return private.get("_value") if private is not None else None

    @property
    def exception(self) -> BaseException | None:
        private = self.__pydantic_private__
        return private.get("_exception") if private is not None else None

    def result(self, raise_on_failure: bool = True) -> Any:
        """The run's return value; for a failed state, raise (or return) its exception."""
        from prefray.results import resolve_state_result

        return resolve_state_result(self, raise_on_failure=raise_on_failure)

    def _shallow_copy(self) -> State:
        """`model_copy()` for a state: the same fields (details shared), payload
        included, without pydantic's generic copy machinery."""
        copy = State.__new__(State)
        _object_setattr(copy, "__dict__", self.__dict__.copy())
        _object_setattr(copy, "__pydantic_fields_set__", set(self.__pydantic_fields_set__))
        extra, private = self.__pydantic_extra__, self.__pydantic_private__
        _object_setattr(copy, "__pydantic_extra__", None if extra is None else dict(extra))
        _object_setattr(copy, "__pydantic_private__", None if private is None else dict(private))
        return copy

    def copy_for_wire(self) -> State:
        """This state without its in-process payload (what the API receives)."""
        return State.model_validate(self.model_dump())

    def __repr__(self) -> str:
        msg = f", message={self.message!r}" if self.message else ""
        return f"{self.name}(type={self.type.value}{msg})"

    __str__ = __repr__


_DEFAULT_NAMES = {
    StateType.SCHEDULED: "Scheduled",
    StateType.PENDING: "Pending",
    StateType.RUNNING: "Running",
    StateType.COMPLETED: "Completed",
    StateType.FAILED: "Failed",
    StateType.CANCELLED: "Cancelled",
    StateType.CRASHED: "Crashed",
    StateType.PAUSED: "Paused",
    StateType.CANCELLING: "Cancelling",
}


def _default_name(state_type: StateType) -> str:
    return _DEFAULT_NAMES[state_type]


_object_setattr = object.__setattr__
DETAILS_DEFAULTS = {
    name: field.default for name, field in StateDetails.model_fields.items()
}  # all immutable (None / False): a copy of this dict is a valid default StateDetails
_QUICK_KEYS = frozenset({"name", "message"})
# the quick path below knows these fields only: a model that changes goes validated
QUICK_STATES = tuple(State.model_fields) == (
    "id", "type", "name", "message", "timestamp", "state_details", "data"
) and tuple(State.__private_attributes__) == ("_value", "_has_value", "_exception") and all(
    f.default_factory is None and isinstance(f.default, (type(None), bool, int, float, str))
    for f in StateDetails.model_fields.values()
)  # fmt: skip


_new = object.__new__  # BaseModel defines no __new__
_details_defaults = DETAILS_DEFAULTS.copy
# per State class: its private attributes' defaults (each state gets a copy)
_PRIVATE_DEFAULTS: dict[type[State], dict[str, Any]] = {}


def _private_template(cls: type[State]) -> dict[str, Any]:
    template = {name: attr.get_default() for name, attr in cls.__private_attributes__.items()}
    _PRIVATE_DEFAULTS[cls] = template
    return template


def build_valid_state(
    cls: type[State],
    state_id: uuid.UUID,
    state_type: StateType,
    name: str,
    message: str | None,
    timestamp: dt.datetime,
    fields: frozenset[str],
) -> State:
    """A `cls` (State or a subclass) with default details and no data, built from
    values that are already valid as validation would build it (the same fields,
    fields-set `fields` and private attributes), without validating: the engine
    and the Ray monitor make several states per task run. Only where
    `QUICK_STATES` holds (the models still have the fields this knows)."""
    # StateDetails() and the state itself, as validation makes them (`__dict__`
    # and the three slots pydantic models have)
    details = _new(StateDetails)
    _object_setattr(details, "__dict__", _details_defaults())
    _object_setattr(details, "__pydantic_fields_set__", set())
    _object_setattr(details, "__pydantic_extra__", None)
    _object_setattr(details, "__pydantic_private__", None)
    state = _new(cls)
    _object_setattr(
        state,
        "__dict__",
        {
            "id": state_id,
            "type": state_type,
            "name": name,
            "message": message,
            "timestamp": timestamp,
            "state_details": details,
            "data": None,
        },
    )
    _object_setattr(state, "__pydantic_fields_set__", set(fields))
    _object_setattr(state, "__pydantic_extra__", None)
    private = _PRIVATE_DEFAULTS.get(cls) or _private_template(cls)
    _object_setattr(state, "__pydantic_private__", private.copy())
    return state


# the fields set of a state made by a constructor below with name/message given
_SET_BY_NAME = frozenset({"type", "state_details", "name"})
_SET_BY_NAME_AND_MESSAGE = _SET_BY_NAME | {"message"}


def _make(state_type: StateType, default_name: str | None = None):
    quick_name = default_name or _DEFAULT_NAMES[state_type]

    def constructor(**kwargs: Any) -> State:
        if not kwargs and QUICK_STATES:  # Running(), Completed(): two per task run
            return build_valid_state(
                State, uuid4(), state_type, quick_name, None, now(), _SET_BY_NAME
            )
        if QUICK_STATES and kwargs.keys() <= _QUICK_KEYS:
            # the engine's common case (no details, str name/message): no validation
            name = kwargs.get("name", default_name)
            message = kwargs.get("message")
            if (name is None or type(name) is str) and (message is None or type(message) is str):
                fields = _SET_BY_NAME_AND_MESSAGE if "message" in kwargs else _SET_BY_NAME
                name = name or _DEFAULT_NAMES[state_type]
                return build_valid_state(State, uuid4(), state_type, name, message, now(), fields)
        kwargs.setdefault("name", default_name)
        details = kwargs.pop("state_details", None) or StateDetails()
        if isinstance(details, dict):
            details = StateDetails(**details)
        for key in list(kwargs):
            if key in StateDetails.model_fields and key not in State.model_fields:
                setattr(details, key, kwargs.pop(key))
        return State(type=state_type, state_details=details, **kwargs)

    constructor.__name__ = default_name or _default_name(state_type)
    constructor.__doc__ = f"A {state_type.value} state named {constructor.__name__!r}."
    return constructor


Scheduled = _make(StateType.SCHEDULED)
Pending = _make(StateType.PENDING)
Running = _make(StateType.RUNNING)
Completed = _make(StateType.COMPLETED)
Failed = _make(StateType.FAILED)
Crashed = _make(StateType.CRASHED)
Cancelled = _make(StateType.CANCELLED)
Cancelling = _make(StateType.CANCELLING)
Paused = _make(StateType.PAUSED)
Suspended = _make(StateType.PAUSED, "Suspended")
AwaitingRetry = _make(StateType.SCHEDULED, "AwaitingRetry")
Retrying = _make(StateType.RUNNING, "Retrying")
Cached = _make(StateType.COMPLETED, "Cached")
