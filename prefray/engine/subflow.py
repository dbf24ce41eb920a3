"""A flow called inside another flow: the parent records it as one of its task
runs (so the child's flow run carries `parent_task_run_id`), counts its final
state like a task's, and does not call it again when a retried parent already
completed it."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from prefray.context import FlowRunContext
from prefray.futures import DoneFuture
from prefray.schemas import TaskRunCreate
from prefray.states import Pending, Running, State

if TYPE_CHECKING:
    from prefray.flows import Flow

__all__ = ["ParentLink"]


class ParentLink:
    def __init__(self, flow: Flow, parent: FlowRunContext) -> None:
        self.flow = flow
        self.parent = parent
        self.book = parent.extra["book"]
        self.task_key = f"{flow.name}-subflow"
        self.index = self.book.next_index(self.task_key)
        self.task_run_id = uuid.uuid4()
        self._created = False

    @classmethod
    def for_current(cls, flow: Flow) -> ParentLink | None:
        parent = FlowRunContext.get()
        if parent is None or parent.flow_run is None or "book" not in parent.extra:
            return None
        return cls(flow, parent)

    def prior_state(self) -> State | None:
        """The completed state of this call in an earlier attempt of the parent."""
        return self.book.prior(self.task_key, self.index)

    def create(self) -> uuid.UUID:
        from prefray.engine.reporting import get_state_reporter

        parent_run = self.parent.flow_run
        assert parent_run is not None
        reporter = get_state_reporter()
        reporter.create_task_run(
            TaskRunCreate(
                id=self.task_run_id,
                name=f"{self.flow.name}-{self.book.dynamic_key(self.index)}",
                flow_run_id=parent_run.id,
                task_key=self.task_key,
                dynamic_key=self.book.dynamic_key(self.index),
                state=Pending(),
            )
        )
        reporter.report(self.task_run_id, Running())
        # the child's flow run refers to this task run: it must exist first
        reporter.flush(self.parent.settings.api_request_timeout)
        self._created = True
        return self.task_run_id

    def finished(self, state: State) -> None:
        if self._created:
            from prefray.engine.reporting import get_state_reporter

            mirror = State(type=state.type, name=state.name, message=state.message)
            mirror.data = state.data
            get_state_reporter().report(self.task_run_id, mirror)
        self._record(state)

    def _record(self, state: State) -> None:
        future = DoneFuture(self.task_run_id, state, self.flow.name)
        self.book.record(future, self.task_key, self.index)

    def __bool__(self) -> bool:
        return True
