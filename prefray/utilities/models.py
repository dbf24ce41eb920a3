"""`construct` and `copy_with`: pydantic's `model_construct` and
`model_copy(update=...)` for the engine's hot path.

`Model.model_construct(**values)` walks every field in Python (aliases,
defaults) on each call: about 5 µs for a task run's models, several times
per task run. `construct(Model, **values)` builds the same instance (the same
`__dict__` in field order, `model_fields_set` = the names given, defaults
for the others) from a per-class plan made once. Models it does not cover
(aliases, extra="allow", a post-init hook, missing required fields) go to
`model_construct` itself. `copy_with(model, update)` is `model.model_copy(update=
update)` without `copy.copy` and its dispatch (the reporter's sender makes one
per mapped task run).
"""

from __future__ import annotations

import enum
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

__all__ = ["construct", "copy_with"]

M = TypeVar("M", bound=BaseModel)
_IMMUTABLE = (type(None), bool, int, float, str, bytes, enum.Enum, frozenset)
_object_setattr = object.__setattr__


class _Plan:
    __slots__ = ("names", "required", "template", "computed")

    def __init__(self, cls: type[BaseModel]) -> None:
        self.names = frozenset(cls.model_fields)
        self.required = frozenset(n for n, f in cls.model_fields.items() if f.is_required())
        # immutable defaults copied from the template; the others made per instance
        self.template: dict[str, Any] = {}
        self.computed: list[tuple[str, Any]] = []
        for name, field in cls.model_fields.items():
            self.template[name] = None  # keeps the field order of __dict__
            if field.is_required():
                continue
            if field.default_factory is None and isinstance(field.default, _IMMUTABLE):
                self.template[name] = field.default
            else:
                self.computed.append((name, field))


_plans: dict[type, _Plan | None] = {}


def _plan_for(cls: type[BaseModel]) -> _Plan | None:
    try:
        return _plans[cls]
    except KeyError:
        pass
    plain = (
        not cls.__pydantic_root_model__
        and not cls.__pydantic_post_init__
        and cls.model_config.get("extra") != "allow"
        and all(f.alias is None and f.validation_alias is None for f in cls.model_fields.values())
    )
    plan = _plans[cls] = _Plan(cls) if plain else None
    return plan


def construct(cls: type[M], **values: Any) -> M:
    """`cls.model_construct(**values)`, faster: `values` must already be valid."""
    plan = _plan_for(cls)
    keys = values.keys()
    if plan is None or not (keys <= plan.names and plan.required <= keys):
        return cls.model_construct(**values)
    fields = dict(plan.template)
    fields.update(values)
    for name, field in plan.computed:
        if name not in values:
            fields[name] = field.get_default(call_default_factory=True, validated_data=fields)
    model = cls.__new__(cls)
    _object_setattr(model, "__dict__", fields)
    _object_setattr(model, "__pydantic_fields_set__", set(keys))
    _object_setattr(model, "__pydantic_extra__", None)
    _object_setattr(model, "__pydantic_private__", None)
    return model


def copy_with(model: M, update: dict[str, Any]) -> M:
    """`model.model_copy(update=update)`: a shallow copy with the fields in `update`
    replaced (not validated) and counted as set."""
    if model.model_config.get("extra") == "allow":
        return model.model_copy(update=update)
    copied = _new(type(model))
    fields = model.__dict__.copy()
    fields.update(update)
    _object_setattr(copied, "__dict__", fields)
    extra = model.__pydantic_extra__
    _object_setattr(copied, "__pydantic_extra__", None if extra is None else extra.copy())
    fields_set = set(model.__pydantic_fields_set__)
    fields_set.update(update)
    _object_setattr(copied, "__pydantic_fields_set__", fields_set)
    private = model.__pydantic_private__
    if private is not None:
        private = {k: v for k, v in private.items() if v is not PydanticUndefined}
    _object_setattr(copied, "__pydantic_private__", private)
    return copied


_new = object.__new__  # BaseModel defines no __new__
