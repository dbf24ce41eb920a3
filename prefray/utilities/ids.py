"""Random (version 4) UUIDs for the engine's hot path, cheaper than `uuid.uuid4()`.

`uuid.uuid4()` makes one `os.urandom(16)` system call and validates its
arguments for every id; the engine makes several ids per task run. Here the
random bytes come from `os.urandom` in blocks (the same source, so the ids are
as unpredictable), and each UUID is built from its 128-bit integer directly.
A forked child drops the parent's unused block, so the two never share ids.
"""

from __future__ import annotations

import os
import uuid

__all__ = ["uuid4", "uuid_from_int"]

_BLOCK = 1024  # ids per os.urandom call (which also releases the GIL: rarely is better)
# the bits uuid.UUID(int=..., version=4) forces: RFC 4122 variant, version 4
_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_SET = (0x8000 << 48) | (4 << 76)
_UNKNOWN = uuid.SafeUUID.unknown
_new = object.__new__
_setattr = object.__setattr__
_UUID = uuid.UUID

_pool: list[int] = []


def _refill() -> None:
    data = os.urandom(16 * _BLOCK)
    from_bytes = int.from_bytes
    _pool.extend(from_bytes(data[i : i + 16], "big") for i in range(0, len(data), 16))


def uuid4() -> uuid.UUID:
    """A random UUID, as `uuid.uuid4()` makes (thread-safe: `list.pop` is atomic)."""
    while True:
        try:
            value = _pool.pop()
            break
        except IndexError:
            _refill()
    made = _new(_UUID)  # uuid_from_int, inlined: several ids per task run
    _setattr(made, "int", (value & _CLEAR) | _SET)
    _setattr(made, "is_safe", _UNKNOWN)
    return made


def uuid_from_int(value: int) -> uuid.UUID:
    """`uuid.UUID(int=value)` for a value known to fit in 128 bits, without its
    argument checks (what the hot paths pay for each id they decode or make)."""
    made = _new(_UUID)
    _setattr(made, "int", value)
    _setattr(made, "is_safe", _UNKNOWN)
    return made


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pool.clear)
