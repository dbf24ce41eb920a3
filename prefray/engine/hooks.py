"""Calling flow and task state hooks: a hook that raises is logged and ignored."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["call_hooks"]

logger = logging.getLogger("prefray.engine.hooks")


def call_hooks(hooks: Iterable[Callable[..., Any]], owner: Any, run: Any, state: Any) -> None:
    for hook in hooks:
        try:
            hook(owner, run, state)
        except Exception:
            name = getattr(hook, "__name__", repr(hook))
            logger.exception("Hook %r of %r raised; the run's state is unchanged", name, owner)
