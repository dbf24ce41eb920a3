"""Fast request bodies for the hot routes: validated straight from bytes, light states.

`State` builds its private in-process attributes and runs `model_post_init` on
every instance, which costs twice its validation. The hot routes validate
into *wire twins* instead: the same fields, field types, defaults and config,
generated from the real models (so they cannot drift), minus that in-process
machinery. Only `name` is left unset when omitted; `state_json` fills in the
default name the way `State` does.

    reports = parse_body(STATE_REPORTS, await request.body())   # 422 on bad input
    state_json(reports[0].state)   # == State.model_validate(...).model_dump(mode="json")
"""

from __future__ import annotations

import types
import typing
from typing import Any

import pydantic
import pydantic_core
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, TypeAdapter, create_model

from prefray.schemas import StateReport, TaskRunCreate
from prefray.server.database.fastsql import json_text
from prefray.states import State, StateType

__all__ = [
    "DEFAULT_STATE_NAMES",
    "STATE_REPORTS",
    "TASK_RUN_CREATES",
    "WireState",
    "parse_body",
    "state_json",
    "state_text",
    "wire_twin",
]

DEFAULT_STATE_NAMES: dict[StateType, str] = {t: str(State(type=t).name) for t in StateType}


def _has_decorators(model: type[BaseModel]) -> bool:
    d = model.__pydantic_decorators__
    return any(
        (d.validators, d.field_validators, d.root_validators, d.model_validators, d.computed_fields)
    )


def wire_twin(model: type[BaseModel], swap: dict[Any, Any]) -> type[BaseModel]:
    """A model with `model`'s fields and config, its annotations' types replaced per `swap`."""
    if _has_decorators(model):
        raise TypeError(f"{model.__name__} has validators; a wire twin would skip them")
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if annotation in swap:
            annotation = swap[annotation]
        elif typing.get_origin(annotation) in (typing.Union, types.UnionType):
            args = tuple(swap.get(a, a) for a in typing.get_args(annotation))
            annotation = typing.Union[args]  # noqa: UP007 - built from a tuple
        fields[name] = (annotation, info)
    return create_model(model.__name__, __config__=model.model_config, **fields)


# the only in-process machinery State has is `model_post_init` (the default name) and
# private attributes; the twin leaves `name` None when omitted
WireState = wire_twin(State, {})
_WireStateReport = wire_twin(StateReport, {State: WireState})
_WireTaskRunCreate = wire_twin(TaskRunCreate, {State: WireState})

MAX_BATCH = 50_000
STATE_REPORTS: TypeAdapter[Any] = TypeAdapter(
    typing.Annotated[list[_WireStateReport], Field(max_length=MAX_BATCH)]  # type: ignore[valid-type]
)
TASK_RUN_CREATES: TypeAdapter[Any] = TypeAdapter(
    typing.Annotated[list[_WireTaskRunCreate], Field(max_length=MAX_BATCH)]  # type: ignore[valid-type]
)
TASK_RUN_CREATE: TypeAdapter[Any] = TypeAdapter(_WireTaskRunCreate)


def parse_body(adapter: TypeAdapter[Any], body: bytes) -> Any:
    """Validate a JSON body; a bad one raises FastAPI's 422 with `body.`-prefixed fields."""
    try:
        return adapter.validate_json(body)
    except pydantic.ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def state_json(state: BaseModel) -> dict[str, Any]:
    """The JSON form of a (wire or real) state, exactly as `State` would dump it."""
    if state.name is None:  # type: ignore[attr-defined]
        state.name = DEFAULT_STATE_NAMES[state.type]  # type: ignore[attr-defined]
    return state.model_dump(mode="json")


def state_text(state: BaseModel) -> str:
    """`fastsql.json_text(state_json(state))`, the text stored for a state, serialized
    straight from the model (no dict in between: half the cost). A state whose text
    could hold NaN or Infinity (any-typed fields, or strings naming them) goes the
    dict's way, which decides them the same way as before."""
    if state.name is None:  # type: ignore[attr-defined]
        state.name = DEFAULT_STATE_NAMES[state.type]  # type: ignore[attr-defined]
    if state.state_details.run_input_schema is None:  # type: ignore[attr-defined]
        raw = pydantic_core.to_json(state)
        if b"NaN" not in raw and b"Infinity" not in raw:
            return raw.decode()
    return json_text(state_json(state))
