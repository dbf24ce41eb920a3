"""The end of a flow run: "Finished in state ..." is logged once, after everything
the body logged and before what the hooks log, and is on the API when the call
returns, whether the final state was known before its report (logged ahead,
shipped while the state is reported) or only from the server's answer (Failed)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from prefray import flow, get_run_logger, task
from prefray.client import get_client
from prefray.states import State
from task_runners import SequentialTaskRunner

pytestmark = [pytest.mark.usefixtures("api"), pytest.mark.timeout(60)]


def _records(state: State) -> tuple[list[str], list[str]]:
    """(log messages, state history names) of the flow run, as the API has them."""
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        messages = [log.message for log in client.read_logs(flow_run_id=run_id)]
        history = [s.name for s in client.read_flow_run_states(run_id)]
    return messages, history


def _say_bye(flow: Any, run: Any, state: State) -> None:
    get_run_logger().info("hook says bye")


@task
def one() -> int:
    return 1


def _ending(outcome: str) -> Any:
    @flow(
        task_runner=SequentialTaskRunner(),
        on_completion=[_say_bye],
        on_failure=[_say_bye],
    )
    def ending() -> int:
        get_run_logger().info("body says hi")
        value = one()
        if outcome == "failed":
            raise ValueError("no luck")
        return value

    return ending


@pytest.mark.parametrize(
    ("outcome", "final"),
    [("completed", "Completed"), ("failed", "Failed")],  # logged ahead / after the answer
)
def test_the_finish_is_logged_once_in_order_and_on_the_api_at_return(
    outcome: str, final: str
) -> None:
    state = _ending(outcome)(return_state=True)
    assert state.name == final
    messages, history = _records(state)
    finished = [m for m in messages if m.startswith("Finished in state")]
    assert finished == [f"Finished in state {state}"]
    assert messages[0].startswith("Beginning flow run")
    assert messages.index("body says hi") < messages.index(finished[0])
    assert messages[-1] == "hook says bye"
    assert history == ["Pending", "Running", final]


def test_a_retried_flow_logs_its_finish_once_for_the_last_attempt() -> None:
    attempts: list[int] = []

    @flow(task_runner=SequentialTaskRunner(), retries=1, retry_delay_seconds=0)
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    state = flaky(return_state=True)
    assert state.is_completed() and len(attempts) == 2
    messages, history = _records(state)
    assert [m for m in messages if m.startswith("Finished in state")] == [
        f"Finished in state {state}"
    ]
    assert any(m.startswith("Received non-final state 'AwaitingRetry'") for m in messages)
    assert history == ["Pending", "Running", "AwaitingRetry", "Running", "Completed"]


def test_an_async_flow_ends_the_same_way() -> None:
    @flow(task_runner=SequentialTaskRunner(), on_completion=[_say_bye])
    async def ending() -> int:
        get_run_logger().info("body says hi")
        return 1

    state = asyncio.run(ending(return_state=True))
    messages, history = _records(state)
    assert messages[0].startswith("Beginning flow run")
    assert messages[1:] == ["body says hi", f"Finished in state {state}", "hook says bye"]
    assert history == ["Pending", "Running", "Completed"]
