"""Results: serializers, result storage, persisted results, and reading a
state's result.

A run's return value stays in process (attached to its `State`) unless the
run persists it: then the value is serialized into result storage and the
state carries a `ResultReference` (storage path, key, serializer), the only
form of a result the API ever sees. Any process that can read the storage
directory (this machine, or a shared filesystem) can load it back.

Result storage keys
-------------------
`result_storage_key` may be a `str.format` template. The fields available
are:

- `parameters`: the run's parameters, e.g. `"{parameters[x]}"`;
- `task_run`: the task run (`id`, `name`, `task_key`, `dynamic_key`, `tags`, …);
- `flow_run`: the enclosing flow run (`id`, `name`, `flow_name`; `name` may be
  None on a Ray worker, which only knows the flow run's id and flow name).

>>> format_storage_key("{parameters[x]}-{task_run.name}", parameters={"x": 1},
...                    task_run=SimpleNamespace(name="add-0"))
'1-add-0'
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any, Protocol

import cloudpickle

from prefray.exceptions import (
    CancelledRun,
    CrashedRun,
    FailedRun,
    MissingResult,
    PausedRun,
    SerializationError,
    UnfinishedRun,
    UpstreamTaskError,
)
from prefray.settings import get_current_settings
from prefray.states import ResultReference, State, StateType

__all__ = [
    "JSONSerializer",
    "LocalFileSystem",
    "PickleSerializer",
    "Serializer",
    "format_storage_key",
    "get_serializer",
    "load_result",
    "persist_result",
    "resolve_result_storage",
    "resolve_state_result",
    "storage_key_from_context",
]


# serializers -----------------------------------------------------------------
class Serializer(Protocol):
    name: str

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class PickleSerializer:
    """cloudpickle: any Python value, read back by the same Python and libraries."""

    name = "pickle"

    def dumps(self, value: Any) -> bytes:
        try:
            return cloudpickle.dumps(value)
        except Exception as exc:
            raise SerializationError(
                f"a value of type {type(value).__qualname__} could not be pickled: {exc}"
            ) from exc

    def loads(self, data: bytes) -> Any:
        return cloudpickle.loads(data)


class JSONSerializer:
    """JSON: portable and readable; tuples come back as lists, dict keys as strings."""

    name = "json"

    def dumps(self, value: Any) -> bytes:
        try:
            return json.dumps(value).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                f"a value of type {type(value).__qualname__} cannot be serialized to JSON "
                f"({exc}); return JSON types (dict, list, str, int, float, bool, None) "
                "or use result_serializer='pickle'"
            ) from exc

    def loads(self, data: bytes) -> Any:
        return json.loads(data.decode("utf-8"))


_SERIALIZERS: dict[str, Serializer] = {"pickle": PickleSerializer(), "json": JSONSerializer()}


def get_serializer(serializer: str | Serializer | None = None) -> Serializer:
    """A serializer by name ("pickle", "json"); None means settings.result_serializer."""
    if serializer is None:
        serializer = get_current_settings().result_serializer
    if not isinstance(serializer, str):
        return serializer
    try:
        return _SERIALIZERS[serializer]
    except KeyError:
        valid = ", ".join(repr(n) for n in sorted(_SERIALIZERS))
        raise ValueError(f"unknown result serializer {serializer!r}; use one of {valid}") from None


# storage ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LocalFileSystem:
    """Result storage in a directory: local, or a filesystem shared by every node.

    `basepath=None` means `settings.storage_path` (`$PREFRAY_HOME/storage`).
    """

    basepath: Path

    def __init__(self, basepath: str | os.PathLike[str] | None = None) -> None:
        path = Path(basepath) if basepath is not None else get_current_settings().storage_path
        object.__setattr__(self, "basepath", path.expanduser().resolve())

    def _path_for(self, key: str) -> Path:
        parts = PurePosixPath(key).parts
        if not key or PurePosixPath(key).is_absolute() or ".." in parts:
            raise ValueError(
                f"invalid result storage key {key!r}: use a relative path without '..'"
            )
        return self.basepath.joinpath(*parts)

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write atomically: readers see the old file or the whole new one."""
        path = self._path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def read_bytes(self, key: str) -> bytes:
        path = self._path_for(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise MissingResult(
                f"result {key!r} is not in result storage {self.basepath}: it was deleted, "
                "or this machine does not share that directory with the writer"
            ) from None


def resolve_result_storage(
    storage: str | os.PathLike[str] | LocalFileSystem | None,
) -> LocalFileSystem:
    """Accept what users pass as `result_storage`: None, a path, or a LocalFileSystem."""
    if isinstance(storage, LocalFileSystem):
        return storage
    if storage is None or isinstance(storage, (str, os.PathLike)):
        return LocalFileSystem(storage)
    raise TypeError(
        f"result_storage must be a path or a LocalFileSystem, not {type(storage).__qualname__}"
    )


def persist_result(
    value: Any,
    *,
    storage: str | os.PathLike[str] | LocalFileSystem | None = None,
    serializer: str | Serializer | None = None,
    key: str | None = None,
) -> ResultReference:
    """Serialize `value` into result storage and return the reference to it."""
    fs = resolve_result_storage(storage)
    ser = get_serializer(serializer)
    storage_key = key or uuid.uuid4().hex
    fs.write_bytes(storage_key, ser.dumps(value))
    return ResultReference(
        storage_key=storage_key, storage_path=str(fs.basepath), serializer=ser.name
    )


def load_result(ref: ResultReference) -> Any:
    """Read a persisted result back (in any process that sees the storage)."""
    fs = LocalFileSystem(ref.storage_path)
    return get_serializer(ref.serializer).loads(fs.read_bytes(ref.storage_key))


def format_storage_key(
    template: str,
    *,
    parameters: dict[str, Any] | None = None,
    task_run: Any = None,
    flow_run: Any = None,
) -> str:
    """Fill a `result_storage_key` template (fields in the module docstring)."""
    fields = {"parameters": parameters or {}, "task_run": task_run, "flow_run": flow_run}
    try:
        return template.format(**fields)
    except (KeyError, AttributeError, IndexError, ValueError) as exc:
        raise ValueError(
            f"cannot format result_storage_key {template!r}: {exc!r}; available fields are "
            "{parameters[name]}, {task_run.id|name|task_key|dynamic_key}, "
            "{flow_run.id|name|flow_name}"
        ) from None


def storage_key_from_context(template: str) -> str:
    """Fill a template from the current task run (or flow run) context."""
    from prefray.context import FlowRunContext, TaskRunContext

    task_ctx = TaskRunContext.get()
    flow_ctx = FlowRunContext.get()
    flow_run: Any = flow_ctx.flow_run if flow_ctx else None
    if task_ctx is not None:
        if flow_run is None or getattr(flow_run, "id", None) != task_ctx.flow_run_id:
            flow_run = SimpleNamespace(
                id=task_ctx.flow_run_id, name=None, flow_name=task_ctx.flow_name
            )
        return format_storage_key(
            template, parameters=task_ctx.parameters, task_run=task_ctx.task_run, flow_run=flow_run
        )
    return format_storage_key(
        template, parameters=flow_ctx.parameters if flow_ctx else None, flow_run=flow_run
    )


# reading a state's result ----------------------------------------------------
_FAILURE_ERRORS: dict[StateType, type[Exception]] = {
    StateType.FAILED: FailedRun,
    StateType.CRASHED: CrashedRun,
    StateType.CANCELLED: CancelledRun,
}


def resolve_state_result(state: State, raise_on_failure: bool = True) -> Any:
    """What `State.result()` returns: the value, or the failure (raised or returned)."""
    if state.type in _FAILURE_ERRORS:
        exc = state.exception or _failure_from_message(state)
        if raise_on_failure:
            raise exc
        return exc
    if state.type == StateType.COMPLETED:
        return _completed_result(state)
    if state.is_pending() and state.name == "NotReady":
        raise UpstreamTaskError(state.message or "an upstream task run did not complete")
    if state.is_paused():
        raise PausedRun(f"the run is {state.name}; it has no result until it is resumed")
    raise UnfinishedRun(
        f"the run is in state {state.name} ({state.type.value}) and has not finished; "
        "wait for it (future.wait() / future.result()) before asking for its result"
    )


def _failure_from_message(state: State) -> Exception:
    error = _FAILURE_ERRORS[state.type]
    return error(state.message or f"the run ended in state {state.name}")


def _completed_result(state: State) -> Any:
    if state.has_value:
        return state._value
    if state.data is not None:
        return load_result(state.data)
    raise MissingResult(
        f"state {state.name} has no result attached: the result was not persisted. "
        "Set persist_result=True on the task or flow (or PREFRAY_PERSIST_RESULTS=true) "
        "to read results of runs finished in another process"
    )
