"""Which proposals the orchestration rules cannot change: the hot path's shortcut.

Nearly every report is Pending -> Running -> Completed with no cache key, no
concurrency limit and no retry. For those `orchestrate()` accepts the
proposal as it is, and all it computes is the bookkeeping. `plain_write`
says when that is certain without building the `State`s the rules take;
the caller then needs only `orchestration.bookkeeping`, the function
`orchestrate()` itself uses for the run-field updates.

Which rules can apply is read from the rules themselves (`RULES`, their
`KINDS`/`FROM_STATES`/`TO_STATES`), so a new rule takes these transitions off
the shortcut by itself. Two rules apply to the common Pending -> Running but
decide nothing without an input the storage layer supplies: the cached state
(looked up only for a proposal with a cache key) and the tag concurrency
slots. `tests/server/test_fastpath.py` checks every combination against
`orchestrate()`.
"""

from __future__ import annotations

import itertools
from typing import Any

from prefray.server.orchestration import (
    RULES,
    Rule,
    RunKind,
    SlotCounts,
    TagConcurrencyLimits,
    UseCachedResult,
)
from prefray.states import StateType

__all__ = ["plain_write"]

_KINDS: tuple[RunKind, ...] = ("task", "flow")


def _may_apply(rule: type[Rule], kind: RunKind, current: StateType | None, to: StateType) -> bool:
    if getattr(rule.applies, "__func__", None) is not Rule.applies.__func__:  # type: ignore[attr-defined]
        return True  # a rule with its own `applies`: assume it always may
    return kind in rule.KINDS and current in rule.FROM_STATES and to in rule.TO_STATES


_APPLICABLE: dict[tuple[str, StateType | None, StateType], tuple[type[Rule], ...]] = {
    (kind, current, to): tuple(r for r in RULES if _may_apply(r, kind, current, to))
    for kind, current, to in itertools.product(_KINDS, (None, *StateType), StateType)
}


def plain_write(
    kind: RunKind,
    current: StateType | None,
    proposed: Any,
    *,
    force: bool,
    slots: SlotCounts | None,
) -> bool:
    """True when `orchestrate()` would write `proposed` as it is (status ACCEPT).

    The caller has already ruled out a repeated transition id.
    """
    if force:
        return True
    for rule in _APPLICABLE[(kind, current, proposed.type)]:
        if rule is UseCachedResult:
            details = proposed.state_details
            if not details.cache_key or details.refresh_cache:
                continue  # no cached state is looked up: the rule cannot decide
        elif rule is TagConcurrencyLimits and (slots is None or not slots.limits):
            continue
        return False
    return True
