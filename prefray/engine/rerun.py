"""Taking over an existing flow run in a fresh process (`python -m prefray.engine`).

The run was created elsewhere (a deployment, or an earlier process that was
suspended): this process records itself as the run's process, applies the
flow's retry policy to the run, and seeds the run book with the task runs an
earlier process completed with a persisted result, so that they are not
executed again (their results are read back from result storage).
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

from prefray.engine.book import RunBook
from prefray.schemas import FlowRun, TaskRun

if TYPE_CHECKING:
    from prefray.flows import Flow

__all__ = ["adopt_flow_run", "seed_book"]

# task runs read per request when seeding the book
_PAGE = 10_000


def adopt_flow_run(flow: Flow, flow_run: FlowRun, book: RunBook) -> FlowRun:
    from prefray.client import get_client

    with get_client(sync_client=True) as client:
        updated = client.update_flow_run(
            flow_run.id,
            empirical_policy=flow.empirical_policy,
            infrastructure_pid=f"{socket.gethostname()}:{os.getpid()}",
        )
        seed_book(book, _all_task_runs(client, flow_run))
    return updated


def _all_task_runs(client: Any, flow_run: FlowRun) -> list[TaskRun]:
    runs: list[TaskRun] = []
    while True:
        page = client.read_task_runs(flow_run_id=flow_run.id, limit=_PAGE, offset=len(runs))
        runs.extend(page)
        if len(page) < _PAGE:
            return runs


def seed_book(book: RunBook, task_runs: list[TaskRun]) -> None:
    """Reuse completed, persisted task runs; later attempts get fresh dynamic keys."""
    last_attempt = 0
    for run in task_runs:
        index, attempt = _parse_dynamic_key(run.dynamic_key)
        if index is None:
            continue
        last_attempt = max(last_attempt, attempt)
        state = run.state
        if state is not None and state.is_completed() and state.data is not None:
            book.completed.setdefault((run.task_key, index), state)
    if last_attempt:
        # a task run that did not complete is run again as a new task run
        book.attempt = last_attempt + 1


def _parse_dynamic_key(key: str) -> tuple[int | None, int]:
    head, _, tail = key.partition(".")
    try:
        return int(head), int(tail) if tail else 1
    except ValueError:
        return None, 0
