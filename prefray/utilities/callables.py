"""Binding call arguments to a function's signature and validating them."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import pydantic
from pydantic_core import to_jsonable_python

from prefray.exceptions import ParameterBindError, ParameterTypeError, ReservedArgumentError

__all__ = [
    "RESERVED_NAMES",
    "check_reserved_names",
    "get_call_parameters",
    "jsonable_parameters",
    "parameters_to_args_kwargs",
    "validate_parameters",
]

RESERVED_NAMES = ("return_state", "wait_for")


def check_reserved_names(fn: Callable[..., Any], kind: str) -> None:
    """Refuse functions whose parameters collide with prefray's own call keywords."""
    params = inspect.signature(fn).parameters
    for name in RESERVED_NAMES:
        if name in params:
            raise ReservedArgumentError(
                f"{kind} {fn.__qualname__!r} has a parameter named {name!r}, which prefray "
                f"reserves for its own call options; rename the parameter."
            )


def get_call_parameters(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Bind a call to `fn`'s signature: a dict of parameter name -> value, defaults applied."""
    plain = _plain_parameters(fn)
    if plain is not None:
        names, defaults = plain
        if len(args) == len(names) and not kwargs:  # the common call: every argument by position
            return dict(zip(names, args, strict=True))
        bound = _bind_plain(names, defaults, args, kwargs)
        if bound is not None:
            return bound
    try:
        bound = _signature(fn).bind(*args, **kwargs)
    except TypeError as exc:
        raise ParameterBindError(
            f"Error binding parameters for function {fn.__qualname__!r}: {exc}."
        ) from None
    bound.apply_defaults()
    return dict(bound.arguments)


def parameters_to_args_kwargs(
    fn: Callable[..., Any], parameters: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The inverse of `get_call_parameters`, honouring positional-only and *args/**kwargs."""
    plain = _plain_parameters(fn)
    if plain is not None:  # each parameter is positional-or-keyword: all go by name
        return (), {name: parameters[name] for name in plain[0] if name in parameters}
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for name, param in _signature(fn).parameters.items():
        if name not in parameters:
            continue
        value = parameters[name]
        if param.kind == inspect.Parameter.VAR_POSITIONAL:
            args.extend(value)
        elif param.kind == inspect.Parameter.VAR_KEYWORD:
            kwargs.update(value)
        elif param.kind == inspect.Parameter.POSITIONAL_ONLY:
            args.append(value)
        else:
            kwargs[name] = value
    return tuple(args), kwargs


@functools.lru_cache(maxsize=1024)
def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(fn)


@functools.lru_cache(maxsize=1024)
def _plain_parameters(fn: Callable[..., Any]) -> tuple[tuple[str, ...], dict[str, Any]] | None:
    """(names, defaults) when every parameter of `fn` is positional-or-keyword
    (no *args, **kwargs, positional-only or keyword-only): then binding a call
    needs no `Signature.bind`."""
    params = _signature(fn).parameters.values()
    if any(p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params):
        return None
    names = tuple(p.name for p in params)
    defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    return names, defaults


def _bind_plain(
    names: tuple[str, ...], defaults: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any] | None:
    """What `Signature.bind` + `apply_defaults` give for such a function; None
    where the call does not fit (then `bind` reports the error)."""
    if len(args) > len(names):
        return None
    bound = dict(zip(names, args, strict=False))
    used = 0
    for name in names[len(args) :]:
        if name in kwargs:
            bound[name] = kwargs[name]
            used += 1
        elif name in defaults:
            bound[name] = defaults[name]
        else:
            return None  # a missing argument
    if used != len(kwargs):
        return None  # an unknown keyword, or one given twice
    return bound


def validate_parameters(fn: Callable[..., Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """Validate and coerce parameters against `fn`'s type hints (pydantic, lax mode:
    "5" becomes 5 for an `int`). Raises `ParameterTypeError` naming each bad parameter."""
    model = _parameters_model(fn)
    try:
        validated = model.model_validate(parameters)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ParameterTypeError(
            f"Flow run received invalid parameters: {problems} (function {fn.__qualname__!r})"
        ) from None
    return {name: getattr(validated, name) for name in parameters}


@functools.lru_cache(maxsize=256)
def _parameters_model(fn: Callable[..., Any]) -> type[pydantic.BaseModel]:
    hints = _resolved_hints(fn)
    fields: dict[str, Any] = {}
    for name, param in _signature(fn).parameters.items():
        annotation = hints.get(name, Any)
        if param.kind == inspect.Parameter.VAR_POSITIONAL:
            annotation = tuple[annotation, ...]  # type: ignore[valid-type]
        elif param.kind == inspect.Parameter.VAR_KEYWORD:
            annotation = dict[str, annotation]  # type: ignore[valid-type]
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[name] = (annotation, default)
    config = pydantic.ConfigDict(arbitrary_types_allowed=True, extra="allow")
    return pydantic.create_model(f"{fn.__name__}_parameters", __config__=config, **fields)


def _resolved_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        import typing

        return typing.get_type_hints(fn)
    except Exception:  # unresolvable forward refs: validate what we can, as Any
        return {}


def jsonable_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """Parameters as JSON-ready values; a value that cannot be encoded is stored as
    a placeholder string so that the run is still recorded."""
    out: dict[str, Any] = {}
    for name, value in parameters.items():
        try:
            out[name] = to_jsonable_python(value)
        except Exception:
            out[name] = f"<unserializable: {_short_repr(value)}>"
    return out


def _short_repr(value: Any, limit: int = 200) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
