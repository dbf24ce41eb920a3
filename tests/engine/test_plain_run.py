"""The task-run engine's straight path for plain runs (`_run_plain`) does what the
general steps do: the same reports in the same order, the same final state,
value, exception and run context, and hands failures, retries and crashes on.

Each case runs twice, once as it would (the plain path where it applies) and
once with the general steps forced, against the real API over HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import prefray.engine.task_run as task_run_module
from prefray import get_run_logger, task
from prefray.context import TaskRunContext
from prefray.engine.call import TaskRunCall
from prefray.engine.reporting import CollectingReporter
from prefray.engine.task_run import _is_plain, run_task
from prefray.futures import DoneFuture
from prefray.logging import flush_logs
from prefray.schemas import TaskRun
from prefray.settings import Settings, get_current_settings, use_settings
from prefray.states import Completed, Failed, Pending, State

pytestmark = pytest.mark.usefixtures("api")


class Recording(CollectingReporter):
    """A worker's reporter (sends its run's creation first when the engine makes it
    send) that also keeps a log of what the engine reported and when it flushed."""

    def __init__(self, task_run: TaskRun) -> None:
        super().__init__()
        self.task_run: TaskRun | None = task_run
        self.log: list[Any] = []

    def report(self, task_run_id: uuid.UUID, state: State, force: bool = False) -> None:
        self.log.append((task_run_id, state, force))
        super().report(task_run_id, state, force)

    def flush(self, timeout: float | None = None) -> bool:
        self.log.append("flush")
        if self.task_run is not None and self.pending():
            self._items.insert(0, self.task_run.to_create(Pending()))
            self.task_run = None
        return super().flush(timeout)


def make_call(fn_task: Any, parameters: dict[str, Any], **options: Any) -> TaskRunCall:
    run_count = options.pop("run_count", 0)
    tags = options.pop("tags", [])
    task_run = TaskRun(
        id=uuid.uuid4(),
        name=f"{fn_task.name}-0",
        task_key=f"plain-{uuid.uuid4().hex[:8]}",
        dynamic_key="0",
        tags=tags,
        empirical_policy=fn_task.empirical_policy,
        run_count=run_count,
    )
    settings = options.pop("settings", None) or get_current_settings()
    call = TaskRunCall(
        task=fn_task,
        task_run=task_run,
        parameters=parameters,
        settings=settings,
        flow_name="f",
        **options,
    )
    call.reporter = Recording(task_run)
    return call


def run_both(
    monkeypatch: pytest.MonkeyPatch, make: Callable[[], TaskRunCall], raise_crash: bool = False
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(what the plain path gave, what the general steps gave) for two fresh calls."""
    plain_call = make()
    assert _is_plain(plain_call)
    plain = outcome(plain_call, raise_crash)
    with monkeypatch.context() as m:
        m.setattr(task_run_module, "_is_plain", lambda call: False)
        general = outcome(make(), raise_crash)
    return plain, general


def outcome(call: TaskRunCall, raise_crash: bool) -> tuple[Any, ...]:
    raised: BaseException | None = None
    try:
        final = run_task(call, raise_crash=raise_crash)
    except BaseException as exc:  # noqa: BLE001 - what a crash re-raises is compared
        raised, final = exc, None
    assert TaskRunContext.get() is None  # the context is left behind the run
    reports = [
        item if item == "flush" else (item[0] == call.task_run.id, describe(item[1]), item[2])
        for item in call.reporter.log
    ]
    return (
        reports,
        None if final is None else describe(final),
        None if final is None else (final.has_value, final._value if final.has_value else None),
        type(raised).__name__ if raised else None,
    )


def describe(state: State) -> tuple[Any, ...]:
    """A state as everything but its id and timestamp."""
    details = state.state_details
    exc = state.exception
    return (
        state.type,
        state.name,
        state.message,
        state.data,
        sorted(state.model_fields_set),
        {k: v for k, v in details.__dict__.items() if k not in ("transition_id", "scheduled_time")},
        sorted(details.model_fields_set),
        None if exc is None else (type(exc).__name__, str(exc)),
        type(state.timestamp) is dt.datetime and state.timestamp.tzinfo is not None,
    )


def add_one(x: int) -> int:
    return x + 1


def test_a_plain_run_reports_and_returns_what_the_general_steps_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t = task(add_one)
    plain, general = run_both(monkeypatch, lambda: make_call(t, {"x": 1}))
    assert plain == general
    reports, final, value, raised = plain
    assert [r[1][1] for r in reports] == ["Running", "Completed"]
    assert final[1] == "Completed" and value == (True, 2) and raised is None


def test_the_run_context_and_logger_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Any, ...]] = []

    def look(x: int) -> int:
        ctx = TaskRunContext.get()
        assert ctx is not None
        get_run_logger().info("inside %s", x)
        seen.append((ctx.task.name, ctx.parameters, ctx.log_prints, ctx.flow_name, ctx.settings))
        return x

    t = task(look)
    plain, general = run_both(monkeypatch, lambda: make_call(t, {"x": 3}))
    assert plain == general
    assert seen[0] == seen[1] == ("look", {"x": 3}, False, "f", get_current_settings())


@pytest.mark.parametrize("flush_logs", [False, True])
def test_a_failure_without_retries_fails_the_same_way(
    monkeypatch: pytest.MonkeyPatch, flush_logs: bool
) -> None:
    hooked: list[str] = []

    def boom(x: int) -> int:
        raise ValueError(f"bad {x}")

    t = task(boom, on_failure=[lambda tk, tr, s: hooked.append(s.name)])
    plain, general = run_both(monkeypatch, lambda: make_call(t, {"x": 1}, flush_logs=flush_logs))
    assert plain == general
    reports, final, _, _ = plain
    assert [r if r == "flush" else r[1][1] for r in reports] == ["Running", "Failed"] + (
        ["flush"] if flush_logs else []
    )
    assert final[5]["retriable"] is False
    assert final[7] == ("ValueError", "bad 1")
    assert hooked == ["Failed", "Failed"]


def test_a_retried_failure_goes_on_through_the_general_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attempts: list[int] = []

    def flaky(x: int) -> int:
        attempts.append(x)
        if len(attempts) % 2:
            raise RuntimeError("first try")
        return x * 10

    t = task(flaky, retries=1, retry_delay_seconds=0)
    plain, general = run_both(monkeypatch, lambda: make_call(t, {"x": 4}))
    assert plain == general
    reports, final, value, _ = plain
    # the failure and the Retrying start are the server's decisions (proposed, not
    # reported); a flush before each proposal
    assert [r if r == "flush" else r[1][1] for r in reports] == [
        "Running",
        "flush",
        "flush",
        "Completed",
    ]
    assert value == (True, 40) and attempts == [4, 4, 4, 4]


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("raise_crash", [False, True])
def test_a_crash_is_reported_and_handed_back_the_same_way(
    monkeypatch: pytest.MonkeyPatch, error: type[BaseException], raise_crash: bool
) -> None:
    def dies() -> None:
        raise error()

    t = task(dies)
    plain, general = run_both(monkeypatch, lambda: make_call(t, {}), raise_crash=raise_crash)
    assert plain == general
    reports, final, _, raised = plain
    assert [r if r == "flush" else r[1][1] for r in reports] == ["Running", "Crashed", "flush"]
    assert raised == (error.__name__ if raise_crash else None)
    assert (final is None) == raise_crash


@pytest.mark.parametrize("upstream", [Completed().with_value(5), Failed(message="no")])
def test_upstreams_resolve_or_leave_the_run_not_ready_the_same_way(
    monkeypatch: pytest.MonkeyPatch, upstream: State
) -> None:
    t = task(add_one)
    up = uuid.uuid4()
    plain, general = run_both(
        monkeypatch,
        lambda: make_call(t, {"x": DoneFuture(up, upstream)}, wait_for=[DoneFuture(up, upstream)]),
    )
    assert plain == general
    assert plain[1][1] == ("Completed" if upstream.is_completed() else "NotReady")


def test_a_completion_hook_or_a_settings_snapshot_not_in_force(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = get_current_settings().with_overrides(log_flush_timeout=7.0)
    t = task(add_one)
    plain, general = run_both(monkeypatch, lambda: make_call(t, {"x": 1}, settings=other))
    assert plain == general

    def settings_inside(x: int) -> float:
        return get_current_settings().log_flush_timeout

    t2 = task(settings_inside)
    plain, general = run_both(monkeypatch, lambda: make_call(t2, {"x": 1}, settings=other))
    assert plain == general and plain[2] == (True, 7.0)


async def _async_add(x: int) -> int:
    await asyncio.sleep(0)
    return x + 1


def _key(ctx: Any, parameters: dict[str, Any]) -> str:
    return "k"


GENERAL_ONLY: dict[str, Callable[[Settings], TaskRunCall]] = {
    "async": lambda s: make_call(task(_async_add), {"x": 1}),
    "timeout": lambda s: make_call(task(add_one, timeout_seconds=5), {"x": 1}),
    "cache key": lambda s: make_call(task(add_one, cache_key_fn=_key), {"x": 1}),
    "completion hook": lambda s: make_call(
        task(add_one, on_completion=[lambda *a: None]), {"x": 1}
    ),
    "task log_prints": lambda s: make_call(task(add_one, log_prints=True), {"x": 1}),
    "flow log_prints": lambda s: make_call(task(add_one), {"x": 1}, log_prints=True),
    "a crashed attempt again": lambda s: make_call(task(add_one), {"x": 1}, run_count=1),
    "persist_result": lambda s: make_call(task(add_one, persist_result=True), {"x": 1}),
    "persist_results setting": lambda s: make_call(
        task(add_one), {"x": 1}, settings=s.with_overrides(persist_results=True)
    ),
    "a limited tag": lambda s: make_call(
        task(add_one), {"x": 1}, tags=["db"], limited_tags=frozenset({"db"})
    ),
}


@pytest.mark.parametrize("case", list(GENERAL_ONLY))
def test_runs_that_need_more_take_the_general_steps(case: str) -> None:
    assert not _is_plain(GENERAL_ONLY[case](get_current_settings()))


@pytest.mark.parametrize(
    "call",
    [
        lambda: make_call(task(add_one, retries=3, on_failure=[print]), {"x": 1}),
        lambda: make_call(task(add_one, persist_result=False), {"x": 1}),
        lambda: make_call(task(add_one, log_prints=False), {"x": 1}, log_prints=False),
        lambda: make_call(task(add_one), {"x": 1}, tags=["db"], limited_tags=frozenset({"x"})),
    ],
)
def test_options_a_success_does_not_use_stay_plain(call: Callable[[], TaskRunCall]) -> None:
    assert _is_plain(call())


@pytest.fixture(autouse=True)
def _in_force(api: Settings) -> Iterator[None]:
    with use_settings(api):
        yield
        # what the runs logged reaches this module's API before it stops
        assert flush_logs(10)
