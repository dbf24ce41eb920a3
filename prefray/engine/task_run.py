"""The task-run engine: one task run through its states, anywhere.

    run_task(call)
      wait_until_ready   resolve upstream futures; NotReady if one did not complete
      start_attempt      Running (batched), or a blocking proposal when the server
                         must decide (a cache key, a retry)
      call               the user's function, under the timeout if any
      handle_success     Completed (result persisted if asked)
      handle_exception   Failed / TimedOut, or handle_retry when retries remain
      handle_crash       a BaseException: Crashed, reported before it propagates

Transitions that need no decision go to the batched state reporter; the
server is asked (blocking) only for a cache lookup or a retry.

A plain run (a sync function with no timeout, cache, persisted result,
completion hook, log_prints, retry of a crashed attempt or concurrency slot:
what a `.map()` of a trivial task is) takes `_run_plain`, the same steps
written out straight, with none of the machinery it would not use; its first
exception hands over to the general steps (`handle_exception` onwards).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from prefray.context import TaskRunContext
from prefray.engine.call import TaskRunCall
from prefray.engine.concurrency import needs_slot
from prefray.engine.final_state import crashed_state, failed_state
from prefray.engine.upstream import UpstreamNotReady, resolve_inputs
from prefray.exceptions import ObjectNotFound, TaskRunTimeout
from prefray.schemas import OrchestrationResult, SetStateStatus
from prefray.settings import get_current_settings, use_settings
from prefray.states import Cancelled, Completed, Failed, Pending, Retrying, Running, State, now
from prefray.utilities.asyncutils import run_coroutine_sync
from prefray.utilities.timeouts import call_with_timeout

__all__ = ["run_task"]

logger = logging.getLogger("prefray.engine.task_run")


def run_task(call: TaskRunCall, raise_crash: bool = True) -> State:
    """Run one task run and return its final state, with the value attached.

    A BaseException (KeyboardInterrupt, SystemExit, a termination signal) is
    reported as Crashed and re-raised; runners whose calls run on worker threads
    pass `raise_crash=False` to get the Crashed state back instead.
    """
    if get_current_settings() is call.settings:  # the driver: already in force
        return _run(call, raise_crash)
    with use_settings(call.settings):
        return _run(call, raise_crash)


def _run(call: TaskRunCall, raise_crash: bool) -> State:
    try:
        if _is_plain(call):
            return _run_plain(call)
        return _TaskRunEngine(call).run()
    except BaseException as exc:
        state = _TaskRunEngine(call).handle_crash(exc)
        if raise_crash:
            raise
        return state


def _is_plain(call: TaskRunCall) -> bool:
    """Whether `_run_plain` does for this run what the general steps would: a
    sync function with no timeout, cache key, persisted result, completion hook,
    log_prints or concurrency slot, on its first attempt."""
    task = call.task
    persist = task.persist_result
    return (
        not task.isasync
        and task.timeout_seconds is None
        and task.cache_key_fn is None
        and not task.on_completion
        and not task.log_prints
        and not call.log_prints
        and not call.task_run.run_count
        and not (persist or (persist is None and call.settings.persist_results))
        and not (
            call.task_run.tags and needs_slot(call.task_run.tags, call.settings, call.limited_tags)
        )
    )


def _run_plain(call: TaskRunCall) -> State:
    """A plain run (`_is_plain`): wait_until_ready, start_attempt, the call,
    handle_success and finish written out straight, the same states and reports
    in the same order; an exception hands the run to the general steps."""
    task, task_run = call.task, call.task_run
    context = _run_context(call)
    try:
        args, kwargs = resolve_inputs(call)
    except UpstreamNotReady as exc:
        engine = _TaskRunEngine(call, context)
        return engine.finish(engine.not_ready(exc))
    reporter = call.reporter or _process_reporter()
    reporter.report(task_run.id, Running())
    token = _task_run_context.set(context)
    error: Exception | None = None
    try:
        value = task.fn(*args, **kwargs)
    except Exception as exc:
        error = exc
    finally:
        _task_run_context.reset(token)
    if error is not None:
        return _TaskRunEngine(call, context).after_exception(args, kwargs, error)
    state = Completed()
    reporter.report(task_run.id, state)
    final = state._shallow_copy().with_value(value)  # the reported copy never has it
    if call.flush_logs:
        _flush(call.settings, reporter)
    return final


_task_run_context = TaskRunContext._var


class _TaskRunEngine:
    def __init__(self, call: TaskRunCall, context: TaskRunContext | None = None) -> None:
        self.call = call
        self.task = call.task
        self.task_run = call.task_run
        self.reporter = call.reporter or _process_reporter()
        # > 0 for a run submitted again (a retry after its worker crashed): its
        # next start is a Retrying proposal the server decides, never a fresh start
        self.run_count = call.task_run.run_count or 0
        self.cache_key: str | None = None
        self.retry_at: dt.datetime | None = None
        self.context = _run_context(call) if context is None else context

    def run(self) -> State:
        state = self.wait_until_ready()
        return self.finish(self.attempts() if state is None else state)

    def attempts(self) -> State:
        """Start and call until the run has its final state."""
        state = None
        while state is None:
            state = self.start_attempt()
            if state is None:
                state = self.call_and_handle()
        return state

    def after_exception(self, args: tuple, kwargs: dict[str, Any], exc: Exception) -> State:
        """The rest of a plain run whose first attempt raised `exc`."""
        self.args, self.kwargs, self.run_count = args, kwargs, 1
        state = self.handle_exception(exc)
        return self.finish(self.attempts() if state is None else state)

    # ready -----------------------------------------------------------------
    def wait_until_ready(self) -> State | None:
        try:
            self.args, self.kwargs = resolve_inputs(self.call)
        except UpstreamNotReady as exc:
            return self.not_ready(exc)
        if self.task.cache_key_fn is not None and not self.task.refresh_cache:
            self.cache_key = self._compute_cache_key()
        return None

    def not_ready(self, exc: UpstreamNotReady) -> State:
        return Pending(name="NotReady", message=str(exc)).with_exception(exc.as_error())

    def _compute_cache_key(self) -> str | None:
        with self.context:
            key = self.task.cache_key_fn(self.context, self._resolved_parameters())
        return None if key is None else str(key)

    def _resolved_parameters(self) -> dict[str, Any]:
        return _rebind(self.task.fn, self.args, self.kwargs)

    # start -----------------------------------------------------------------
    def start_attempt(self) -> State | None:
        """None when the run may go ahead; otherwise the state it ends in."""
        if self.run_count == 0 and self.cache_key is None and not self._needs_slot():
            self.reporter.report(self.task_run.id, Running())
            self.run_count = 1
            return None
        self._sleep_until(self.retry_at)
        proposed = Running() if self.run_count == 0 else Retrying()
        proposed.state_details.cache_key = self.cache_key
        result = self._propose(proposed)
        if result.status == SetStateStatus.ACCEPT:
            self.run_count += 1
            return None
        return self._refused_start(result)

    def _refused_start(self, result: OrchestrationResult) -> State:
        state = result.state
        if state is not None and state.is_completed():
            return self._with_cached_value(state)
        if result.status == SetStateStatus.ABORT:
            return self._aborted(result.reason)
        if state is None:
            return Cancelled(message=f"The API refused to run this task: {result.reason}")
        return state

    def _aborted(self, reason: str | None) -> State:
        """The server will never let this run start (a concurrency limit of 0): it
        ends Failed with the server's reason, and is not retried."""
        state = Failed(message=f"The API refused to run this task: {reason}")
        state.state_details.retriable = False
        self.reporter.report(self.task_run.id, state)
        return state

    def _needs_slot(self) -> bool:
        tags = self.task_run.tags
        return bool(tags) and needs_slot(tags, self.call.settings, self.call.limited_tags)

    def _with_cached_value(self, state: State) -> State:
        if state.data is not None:
            from prefray.results import load_result

            state.with_value(load_result(state.data))
        return state

    # call ------------------------------------------------------------------
    def call_and_handle(self) -> State | None:
        try:
            value = self.call_function()
        except Exception as exc:
            return self.handle_exception(exc)
        return self.handle_success(value)

    def call_function(self) -> Any:
        with self.context:
            if not (self.context.log_prints or self.call.log_prints):
                return self._call_with_timeout()
            from prefray.logging import patch_print

            with patch_print(enabled=self.context.log_prints):  # its logger needs the context
                return self._call_with_timeout()

    def _call_with_timeout(self) -> Any:
        timeout = self.task.timeout_seconds
        if timeout is None:
            return self._invoke()
        # async functions are also cancelled by asyncio; the helper thread makes
        # the wait end on time even if the coroutine blocks its loop
        error = TaskRunTimeout(f"Task run exceeded timeout of {timeout} seconds")
        return call_with_timeout(lambda: self._invoke(timeout), timeout, error)

    def _invoke(self, timeout: float | None = None) -> Any:
        fn, args, kwargs = self.task.fn, self.args, self.kwargs
        if not self.task.isasync:
            return fn(*args, **kwargs)
        if timeout is None:
            return run_coroutine_sync(lambda: fn(*args, **kwargs))
        return run_coroutine_sync(lambda: _async_timeout(fn(*args, **kwargs), timeout))

    # outcomes --------------------------------------------------------------
    def handle_success(self, value: Any) -> State:
        state = Completed()
        if self.cache_key is not None or self.task.cache_key_fn is not None:
            state.state_details.cache_key = self.cache_key or self._compute_cache_key()
            state.state_details.cache_expiration = self._cache_expiration()
        if self._should_persist():
            state.data = self._persist(value)
        self.reporter.report(self.task_run.id, state)
        final = state._shallow_copy()  # the reported copy never carries the value
        if self.task.cache_result_in_memory or state.data is None:
            final.with_value(value)
        return final

    def handle_exception(self, exc: Exception) -> State | None:
        state = _failure_state(exc, self.task.timeout_seconds)
        if not self._retry_allowed(exc):
            state.state_details.retriable = False
            self.reporter.report(self.task_run.id, state)
            return state
        return self.handle_retry(state)

    def handle_retry(self, state: State) -> State | None:
        """Ask the server about a failure that may be retried: None means run again."""
        self._log_failure(state, retrying=True)
        result = self._propose(state)
        if result.status == SetStateStatus.REJECT and result.state and result.state.is_scheduled():
            self.retry_at = result.state.state_details.scheduled_time
            return None
        return state

    def handle_crash(self, exc: BaseException) -> State:
        state = crashed_state(exc)
        state.state_details.retriable = False
        try:
            self.reporter.report(self.task_run.id, state)
            self.reporter.flush(self.call.settings.log_flush_timeout)
        except Exception:  # reporting must not hide the crash itself
            logger.exception("Could not report the crash of task run %s", self.task_run.id)
        return state

    def finish(self, state: State) -> State:
        if state.is_pending():  # NotReady: recorded, the run goes no further
            self.reporter.report(self.task_run.id, state.model_copy())
        if state.is_failed():
            self._log_failure(state, retrying=False)
        _run_hooks(self.task, self.task_run, state)
        if self.call.flush_logs:
            self._flush()
        return state

    # helpers ---------------------------------------------------------------
    def _retry_allowed(self, exc: Exception) -> bool:
        if self.run_count > self.task.retries:
            return False
        condition = self.task.retry_condition_fn
        if condition is None:
            return True
        return bool(condition(self.task, self.task_run, _failure_state(exc, None)))

    def _propose(self, state: State) -> OrchestrationResult:
        from prefray.client import get_client

        self.reporter.flush(self.call.settings.api_request_timeout)
        with get_client(sync_client=True) as client:
            created = False
            while True:
                try:
                    result = client.set_task_run_state(self.task_run.id, state)
                except ObjectNotFound:
                    if created:
                        raise
                    # its creation may still wait in the driver's batch (a worker asking
                    # first): create it here (an upsert, so the batch's replay is harmless)
                    client.create_task_run(self.task_run.to_create())
                    created = True
                    continue
                if result.status != SetStateStatus.WAIT:
                    return result
                time.sleep(max(0.0, result.delay_seconds or 0.0))

    def _sleep_until(self, when: dt.datetime | None) -> None:
        if when is not None:
            time.sleep(max(0.0, (when - now()).total_seconds()))

    def _cache_expiration(self) -> dt.datetime | None:
        expiration = self.task.cache_expiration
        return None if expiration is None else now() + expiration

    def _should_persist(self) -> bool:
        if self.task.persist_result is not None:
            return self.task.persist_result
        return self.task.cache_key_fn is not None or self.call.settings.persist_results

    def _persist(self, value: Any) -> Any:
        from prefray.results import persist_result

        key = self.task.result_storage_key
        if key is not None:
            key = key.format(parameters=self._resolved_parameters(), task_run=self.task_run)
        return persist_result(
            value,
            storage=self.task.result_storage,
            serializer=self.task.result_serializer or self.call.settings.result_serializer,
            key=key,
        )

    def _log_failure(self, state: State, retrying: bool) -> None:
        from prefray.logging import get_run_logger

        with self.context:
            run_logger = get_run_logger()
            exc = state.exception
            info = (type(exc), exc, exc.__traceback__) if exc is not None else None
            suffix = " Retrying." if retrying else ""
            run_logger.error("%s%s", state.message, suffix, exc_info=info)

    def _flush(self) -> None:
        _flush(self.call.settings, self.reporter)


def _flush(settings: Any, reporter: Any) -> None:
    from prefray.logging import flush_logs

    timeout = settings.log_flush_timeout
    flush_logs(timeout)
    reporter.flush(timeout)


def _failure_state(exc: Exception, timeout: float | None) -> State:
    if isinstance(exc, TaskRunTimeout):
        message = f"Task run exceeded timeout of {timeout} seconds"
        from prefray.states import Failed

        return Failed(name="TimedOut", message=message).with_exception(exc)
    return failed_state(exc)


async def _async_timeout(coro: Any, timeout: float) -> Any:
    import asyncio

    try:
        return await asyncio.wait_for(coro, timeout)
    except asyncio.TimeoutError:
        raise TaskRunTimeout(f"Task run exceeded timeout of {timeout} seconds") from None


def _rebind(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    from prefray.utilities.callables import get_call_parameters

    return get_call_parameters(fn, args, kwargs)


def _run_context(call: TaskRunCall) -> TaskRunContext:
    return TaskRunContext(
        settings=call.settings,
        task=call.task,
        task_run=call.task_run,
        parameters=call.parameters,
        log_prints=_log_prints(call),
        flow_run_id=call.flow_run_id,
        flow_name=call.flow_name,
    )


def _log_prints(call: TaskRunCall) -> bool:
    return call.task.log_prints if call.task.log_prints is not None else call.log_prints


_get_state_reporter: Any = None


def _process_reporter() -> Any:
    global _get_state_reporter
    if _get_state_reporter is None:  # imported on first use: reporting imports the client
        from prefray.engine.reporting import get_state_reporter

        _get_state_reporter = get_state_reporter
    return _get_state_reporter()


def _run_hooks(task: Any, task_run: Any, state: State) -> None:
    hooks = task.on_completion if state.is_completed() else ()
    if state.is_failed():
        hooks = task.on_failure
    for hook in hooks:
        try:
            hook(task, task_run, state)
        except Exception:
            logger.exception("Hook %r of task %r raised; ignored", hook, task.name)
