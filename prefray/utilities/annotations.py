"""Wrappers that change how the engine treats a task argument.

- `unmapped(x)`: passed whole to every task run of a `.map()`.
- `allow_failure(future)`: the downstream run proceeds even if that upstream
  did not complete; the argument resolves to the upstream's result or exception.
- `quote(x)`: the engine does not look inside `x` for futures (cheap for big
  collections) and passes it through as is.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

__all__ = ["BaseAnnotation", "allow_failure", "quote", "unmapped"]

T = TypeVar("T")


class BaseAnnotation(Generic[T]):
    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def unwrap(self) -> T:
        return self.value

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.value == other.value  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, id(self.value)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.value,))


class unmapped(BaseAnnotation[T]):  # noqa: N801 - Prefect's public name
    """Pass this argument whole to every task run of a `.map()`."""

    __slots__ = ()

    def __getitem__(self, _: object) -> T:
        return self.value


class allow_failure(BaseAnnotation[T]):  # noqa: N801
    """Run the downstream task even if this upstream fails."""

    __slots__ = ()


class quote(BaseAnnotation[T]):  # noqa: N801
    """Do not look inside this argument for futures; pass it through unchanged."""

    __slots__ = ()
