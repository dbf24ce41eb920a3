"""The flow-run engine, on the driver: one flow run through its states.

    create     the flow run (and, for a subflow, the parent's task run for it)
    validate   parameters (pydantic); invalid ones end the run Failed
    enter      the flow run context, the flow's own task runner, SIGTERM handling
    attempt    Running -> call the body -> its final state (retries loop here)
    finish     report the final state, run hooks, flush logs, return it

A BaseException in the body (KeyboardInterrupt, SystemExit, SIGTERM) ends
the run Crashed, reported before the exception propagates. Leaving the flow
waits for every future it made; a failed, crashed or timed-out body cancels
the work that has not started.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prefray.context import FlowRunContext, TagsContext
from prefray.engine.book import RunBook
from prefray.engine.collector import fewer_collections
from prefray.engine.final_state import (
    aggregate_states,
    crashed_state,
    failed_state,
    return_value_to_state,
)
from prefray.engine.hooks import call_hooks
from prefray.engine.pausing import FlowRunCancelledWhilePaused, GatedTaskRunner, SuspendedRun
from prefray.engine.signals import sigterm_raises
from prefray.engine.subflow import ParentLink
from prefray.exceptions import FlowRunTimeout, ParameterTypeError
from prefray.schemas import FlowRun, SetStateStatus
from prefray.settings import get_current_settings
from prefray.states import Cancelled, Failed, Running, State, now
from prefray.utilities.callables import (
    jsonable_parameters,
    parameters_to_args_kwargs,
    validate_parameters,
)
from prefray.utilities.timeouts import call_with_timeout

if TYPE_CHECKING:
    from prefray.flows import Flow

__all__ = ["FlowRunEngine"]


class FlowRunEngine:
    """Runs `flow` once; with `flow_run`, an existing run (by id in a fresh process:
    `python -m prefray.engine`) instead of creating one."""

    def __init__(
        self, flow: Flow, parameters: dict[str, Any], flow_run: FlowRun | None = None
    ) -> None:
        self.flow = flow
        self.parameters = parameters
        self.book = RunBook(is_async=flow.isasync)
        self.existing = flow_run
        self.parent = ParentLink.for_current(flow) if flow_run is None else None
        self.flow_run: FlowRun | None = None
        self.runner: Any = None
        self._logged_finish: State | None = None  # the final state logged ahead of its report

    # the two entry points ------------------------------------------------------
    def run_sync(self) -> State:
        early = self.create_and_validate()
        if early is not None:
            return self.finish(early)
        with self.enter():
            while True:
                state = self.begin_attempt()
                if state is None:
                    state = self.outcome(self._call_sync)
                final = self.end_attempt(state)
                if final is not None:
                    return self.finish(final)

    async def run_async(self) -> State:
        early = self.create_and_validate()
        if early is not None:
            return self.finish(early)
        with self.enter():
            while True:
                state = self.begin_attempt()
                if state is None:
                    try:
                        value = await self._call_async()
                    except BaseException as exc:
                        state = self.exception_state(exc)
                    else:
                        state = self.value_state(value)
                final = self.end_attempt(state)
                if final is not None:
                    return self.finish(final)

    # create ----------------------------------------------------------------------
    def create_and_validate(self) -> State | None:
        """Create the run; a state when it must not execute (invalid parameters, or
        a subflow that an earlier attempt of its parent already completed)."""
        prior = self.parent.prior_state() if self.parent else None
        if prior is not None:
            return prior
        self.settings = _settings_with_api()
        if self.parent:
            self.parent.create()
        if self.existing is not None:
            from prefray.engine.rerun import adopt_flow_run

            self.flow_run = adopt_flow_run(self.flow, self.existing, self.book)
        else:
            self.flow_run = self._create_run()
        if not self.flow.validate_parameters:
            return None
        try:
            self.parameters = validate_parameters(self.flow.fn, self.parameters)
        except ParameterTypeError as exc:
            return self._propose_final(Failed(message=str(exc)).with_exception(exc))
        return None

    def _create_run(self) -> FlowRun:
        from prefray.client import get_client

        with get_client(sync_client=True) as client:
            return client.create_flow_run(
                self.flow.name,
                name=self.flow.run_name(self.parameters),
                parameters=jsonable_parameters(self.parameters),
                tags=self._tags(),
                parent_task_run_id=self.parent.task_run_id if self.parent else None,
                empirical_policy=self.flow.empirical_policy,
            )

    def _tags(self) -> list[str]:
        ctx = TagsContext.get()
        return sorted(set(self.flow.tags) | (ctx.current_tags if ctx else frozenset()))

    # enter -----------------------------------------------------------------------
    @contextlib.contextmanager
    def enter(self) -> Iterator[None]:
        self.runner = self.flow.task_runner.duplicate()
        pause_gate = threading.Event()  # cleared while the run is paused
        pause_gate.set()
        context = FlowRunContext(
            settings=self.settings,
            flow=self.flow,
            flow_run=self.flow_run,
            task_runner=GatedTaskRunner(self.runner, pause_gate),
            parameters=self.parameters,
            log_prints=bool(self.flow.log_prints),
            extra={"book": self.book, "pause_gate": pause_gate},
        )
        with contextlib.ExitStack() as stack:
            if self.parent is None:
                stack.enter_context(sigterm_raises())
                stack.enter_context(fewer_collections())
            stack.enter_context(self.runner.start())
            stack.enter_context(context)
            stack.enter_context(TagsContext(current_tags=frozenset(self._tags())))
            if self.flow.log_prints:
                from prefray.logging import patch_print

                stack.enter_context(patch_print())
            yield

    # attempt ---------------------------------------------------------------------
    def begin_attempt(self) -> State | None:
        """Propose Running: None when the body may run, else the state it ends in."""
        result = self._propose(Running())
        if result.status != SetStateStatus.ACCEPT:
            return result.state or Failed(message=f"The API refused to run: {result.reason}")
        self._log("Beginning flow run %r for flow %r", self.flow_run.name, self.flow.name)
        call_hooks(self.flow.on_running, self.flow, self.flow_run, result.state or Running())
        return None

    def outcome(self, body: Any) -> State:
        try:
            value = body()
        except BaseException as exc:
            return self.exception_state(exc)
        return self.value_state(value)

    def value_state(self, value: Any) -> State:
        states = [future.wait_state() for future in self.book.futures]  # no dangling work
        if value is None and states:
            state = aggregate_states(states)
            return state.with_value(None) if state.is_completed() else state
        return return_value_to_state(value)

    def exception_state(self, exc: BaseException) -> State:
        if isinstance(exc, SuspendedRun):  # already recorded; the process leaves the flow
            return exc.state
        self.runner.cancel_all()
        if isinstance(exc, FlowRunCancelledWhilePaused):
            return Cancelled(message=str(exc))
        if isinstance(exc, FlowRunTimeout):
            message = f"Flow run exceeded timeout of {self.flow.timeout_seconds} seconds"
            return Failed(name="TimedOut", message=message).with_exception(exc)
        if isinstance(exc, Exception):
            self._log_error(exc)
            return failed_state(exc, "Flow run")
        self.crash(exc)
        raise exc

    def end_attempt(self, state: State) -> State | None:
        """Report the attempt's state: None when the server schedules a retry."""
        if state.is_paused():  # suspended: the API has this state already
            return state
        if state.is_completed() and self.flow.should_persist(self.settings):
            state.data = self.flow.persist(_value_of(state))
        final = self._propose_final(state)
        if final.is_scheduled():
            self._log("Received non-final state %r; retrying", final.name)
            _sleep_until(final.state_details.scheduled_time)
            self.book.next_attempt()
            return None
        return final

    def crash(self, exc: BaseException) -> None:
        state = crashed_state(exc, "Flow run")
        try:
            self._reporter().flush(self.settings.log_flush_timeout)
            self._propose(state)
        except Exception:  # the crash itself must propagate
            pass
        self.finish(state)

    # finish ----------------------------------------------------------------------
    def finish(self, state: State) -> State:
        if self.flow_run is not None:
            state.state_details.flow_run_id = self.flow_run.id
            if state is not self._logged_finish:
                self._log("Finished in state %s", state)
            hooks = self.flow.hooks_for(state)
            call_hooks(hooks, self.flow, self.flow_run, state)
        if self.parent:
            self.parent.finished(state)
        _flush_logs(self.settings if self.flow_run else get_current_settings())
        return state

    # helpers ---------------------------------------------------------------------
    def _call_sync(self) -> Any:
        args, kwargs = parameters_to_args_kwargs(self.flow.fn, self.parameters)
        timeout = self.flow.timeout_seconds
        if timeout is None:
            return self.flow.fn(*args, **kwargs)
        error = FlowRunTimeout(f"Flow run exceeded timeout of {timeout} seconds")
        return call_with_timeout(lambda: self.flow.fn(*args, **kwargs), timeout, error)

    async def _call_async(self) -> Any:
        args, kwargs = parameters_to_args_kwargs(self.flow.fn, self.parameters)
        timeout = self.flow.timeout_seconds
        if timeout is None:
            return await self.flow.fn(*args, **kwargs)
        try:
            return await asyncio.wait_for(self.flow.fn(*args, **kwargs), timeout)
        except asyncio.TimeoutError:
            raise FlowRunTimeout(f"Flow run exceeded timeout of {timeout} seconds") from None

    def _propose_final(self, state: State) -> State:
        if not state.is_failed():
            self._log_finish_ahead(state)
        self._reporter().flush(self.settings.api_request_timeout)  # task states land first
        result = self._propose(state)
        if result.status == SetStateStatus.ACCEPT or result.state is None:
            return state
        if result.state.is_scheduled():
            return result.state
        return state

    def _log_finish_ahead(self, state: State) -> None:
        """Log "Finished in state ..." before the final state is reported, and have the
        log shipper send it (with what the run logged before) now, on its own thread,
        while this one reports the states: one round trip fewer after the body.

        Only for a state the answer cannot change: the final state is the proposed one
        unless the server schedules a retry, which it does only for a Failed one."""
        self._log("Finished in state %s", state)
        self._logged_finish = state
        _flush_logs(self.settings, timeout=0)  # wakes the shipper; waits for nothing

    def _propose(self, state: State) -> Any:
        from prefray.client import get_client

        with get_client(sync_client=True) as client:
            return client.set_flow_run_state(self.flow_run.id, state)

    def _reporter(self) -> Any:
        from prefray.engine.reporting import get_state_reporter

        return get_state_reporter()

    def _log(self, message: str, *args: Any) -> None:
        with self._logging_context():
            from prefray.logging import get_run_logger

            get_run_logger().info(message, *args)

    def _log_error(self, exc: BaseException) -> None:
        with self._logging_context():
            from prefray.logging import get_run_logger

            get_run_logger().error(
                "Flow run encountered an exception %s: %s",
                type(exc).__name__,
                exc,
                exc_info=(type(exc), exc, exc.__traceback__),
            )

    def _logging_context(self) -> Any:
        ctx = FlowRunContext.get()
        if ctx is not None and ctx.flow_run is self.flow_run:
            return contextlib.nullcontext()
        return FlowRunContext(settings=self.settings, flow=self.flow, flow_run=self.flow_run)


def _settings_with_api() -> Any:
    from prefray.client import get_client

    with get_client(sync_client=True):  # starts the embedded API when none is set
        pass
    return get_current_settings()


def _value_of(state: State) -> Any:
    """The value to persist: through `result()`, since a state that a future
    returned may keep its value elsewhere (a Ray object store) until asked."""
    if state.has_value:
        return state._value
    from prefray.exceptions import MissingResult

    try:
        return state.result()
    except MissingResult:
        return None


def _sleep_until(when: Any) -> None:
    if when is not None:
        time.sleep(max(0.0, (when - now()).total_seconds()))


def _flush_logs(settings: Any, timeout: float | None = None) -> None:
    from prefray.logging import flush_logs

    flush_logs(settings.log_flush_timeout if timeout is None else timeout)
