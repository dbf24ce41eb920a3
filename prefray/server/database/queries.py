"""Small query helpers shared by the storage modules (dialect differences live here)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from prefray.schemas import FlowRunFilter, FlowRunSort, TaskRunFilter
from prefray.states import State

__all__ = [
    "insert_ignore",
    "json_array_contains_all",
    "random_run_name",
    "read_states",
    "run_filter_clauses",
    "run_page",
    "sort_clause",
]

_ADJECTIVES = (
    "amber", "brave", "calm", "dapper", "eager", "fancy", "gentle", "happy", "icy",
    "jolly", "keen", "lucky", "mellow", "nimble", "olive", "proud", "quick", "rapid",
    "silver", "tidy", "upbeat", "vivid", "witty", "young", "zesty",
)  # fmt: skip
_NOUNS = (
    "albatross", "badger", "cheetah", "dolphin", "egret", "falcon", "gecko", "heron",
    "ibis", "jaguar", "koala", "lemur", "marmot", "narwhal", "otter", "puffin", "quail",
    "raven", "salmon", "tapir", "urchin", "vulture", "walrus", "yak", "zebra",
)  # fmt: skip


def random_run_name() -> str:
    """A readable run name like Prefect's ("brave-otter")."""
    return f"{random.choice(_ADJECTIVES)}-{random.choice(_NOUNS)}"


def insert_ignore(dialect: str, table: sa.Table) -> Any:
    """`INSERT ... ON CONFLICT DO NOTHING` for the given dialect (any unique key)."""
    module = sqlite if dialect == "sqlite" else postgresql
    return module.insert(table).on_conflict_do_nothing()


def insert_or_update(
    dialect: str, table: sa.Table, index_elements: Sequence[str], update: Sequence[str]
) -> Any:
    module = sqlite if dialect == "sqlite" else postgresql
    stmt = module.insert(table)
    return stmt.on_conflict_do_update(
        index_elements=list(index_elements),
        set_={name: stmt.excluded[name] for name in update},
    )


def json_array_contains_all(dialect: str, column: Any, values: Sequence[str]) -> Any:
    """A WHERE clause: the JSON array in `column` holds every one of `values`."""
    if dialect == "postgresql":
        return sa.cast(column, JSONB).contains(list(values))
    clauses = []
    for value in values:
        each = sa.func.json_each(column).table_valued("value")
        clauses.append(
            sa.select(sa.literal(1)).select_from(each).where(each.c.value == value).exists()
        )
    return sa.and_(*clauses)


def sort_clause(table: sa.Table, sort: FlowRunSort) -> list[Any]:
    c = table.c
    return {
        FlowRunSort.START_TIME_DESC: [c.start_time.desc().nulls_last(), c.created.desc()],
        FlowRunSort.START_TIME_ASC: [c.start_time.asc().nulls_last(), c.created.asc()],
        FlowRunSort.CREATED_DESC: [c.created.desc(), c.id],
        FlowRunSort.CREATED_ASC: [c.created.asc(), c.id],
        FlowRunSort.NAME_ASC: [c.name.asc(), c.created.asc()],
    }[sort]


async def read_states(
    conn: AsyncConnection, history: sa.Table, fk: str, run_id: uuid.UUID
) -> list[State]:
    query = sa.select(history.c.state).where(history.c[fk] == run_id).order_by(history.c.seq)
    return [State.model_validate(row.state) for row in await conn.execute(query)]


def run_filter_clauses(
    dialect: str, table: sa.Table, flt: FlowRunFilter | TaskRunFilter
) -> list[Any]:
    """The WHERE clauses for the fields flow-run and task-run filters share."""
    c = table.c
    where: list[Any] = []
    if flt.ids is not None:
        where.append(c.id.in_(flt.ids))
    if flt.state_types is not None:
        where.append(c.state_type.in_([t.value for t in flt.state_types]))
    if flt.state_names is not None:
        where.append(c.state_name.in_(flt.state_names))
    if flt.name is not None:
        where.append(c.name.contains(flt.name, autoescape=True))
    if flt.tags:
        where.append(json_array_contains_all(dialect, c.tags, flt.tags))
    return where


def run_page(table: sa.Table, where: Sequence[Any], flt: FlowRunFilter | TaskRunFilter) -> Any:
    """The runs matching `where`, in the filter's order, one page of them."""
    return (
        sa.select(table)
        .where(*where)
        .order_by(*sort_clause(table, flt.sort))
        .limit(flt.limit)
        .offset(flt.offset)
    )
