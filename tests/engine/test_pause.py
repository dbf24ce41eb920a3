"""pause_flow_run / suspend_flow_run / resume_flow_run against the real API.

In-process tests run the flow in a thread and resume it from the test's
thread; the cross-process test pauses a flow in a child process and resumes
it from another child (`prefray flow-run resume`) and from this process.
"""

from __future__ import annotations

import contextvars
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from prefray import flow, pause_flow_run, resume_flow_run, suspend_flow_run, task
from prefray.client import get_client
from prefray.exceptions import FlowPauseTimeout, InvalidRunInput, NotPausedError
from prefray.states import StateType


class Approval(BaseModel):
    approved: bool
    note: str = ""


@pytest.fixture()
def client(api: Any) -> Any:
    with get_client(sync_client=True) as c:
        yield c


def _in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        out["state"] = fn()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def _paused_run(client: Any, flow_name: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = client.read_flow_runs(flow_name=flow_name, state_types=[StateType.PAUSED])
        if runs:
            return runs[0]
        time.sleep(0.05)
    raise AssertionError(f"no paused run of {flow_name!r}")


def test_pause_returns_validated_input_after_resume(client: Any) -> None:
    @flow
    def approve_in_thread() -> Any:
        return pause_flow_run(wait_for_input=Approval, timeout=30, poll_interval=0.05)

    thread, out = _in_thread(lambda: approve_in_thread(return_state=True))
    run = _paused_run(client, "approve-in-thread")
    details = run.state.state_details
    assert details.pause_key == "pause-1" and details.run_input_schema["title"] == "Approval"
    with pytest.raises(InvalidRunInput, match="waits for input and none was given"):
        resume_flow_run(run.id)
    with pytest.raises(InvalidRunInput, match="approved"):
        resume_flow_run(run.id, {"approved": "perhaps"})
    resume_flow_run(run.id, Approval(approved=True, note="ok"))
    thread.join(20)
    assert out["state"].result() == Approval(approved=True, note="ok")
    assert client.read_flow_run_input(run.id, "pause-1")["value"]["note"] == "ok"
    with pytest.raises(NotPausedError):
        resume_flow_run(run.id)


def test_pause_for_a_plain_type_and_no_input(client: Any) -> None:
    @flow
    def two_pauses() -> Any:
        first = pause_flow_run(timeout=30, poll_interval=0.05)
        second = pause_flow_run(wait_for_input=int, timeout=30, poll_interval=0.05, key="n")
        return first, second

    thread, out = _in_thread(lambda: two_pauses(return_state=True))
    resume_flow_run(_paused_run(client, "two-pauses").id)
    run = _paused_run(client, "two-pauses")
    assert run.state.state_details.pause_key == "n"
    with pytest.raises(InvalidRunInput, match="not of type .integer."):
        resume_flow_run(run.id, "7")  # JSON schema: strict
    resume_flow_run(run.id, 7)
    thread.join(20)
    assert out["state"].result() == (None, 7)


def test_pause_times_out_and_fails_the_run(client: Any) -> None:
    @flow
    def never_resumed() -> None:
        pause_flow_run(timeout=0.3, poll_interval=0.05)

    state = never_resumed(return_state=True)
    assert state.is_failed()
    assert "paused and never resumed" in state.message
    assert isinstance(state.exception, FlowPauseTimeout)
    run = client.read_flow_run(state.state_details.flow_run_id)
    with pytest.raises(NotPausedError):
        resume_flow_run(run.id)


def test_a_pause_key_fires_once_per_run(client: Any, tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"

    @flow(retries=1)
    def retried() -> str:
        pause_flow_run(timeout=30, poll_interval=0.05)
        with attempts.open("a") as fh:
            fh.write("x")
        if len(attempts.read_text()) == 1:
            raise ValueError("first attempt fails after the pause")
        return "done"

    thread, out = _in_thread(lambda: retried(return_state=True))
    resume_flow_run(_paused_run(client, "retried").id)
    thread.join(20)
    state = out["state"]
    assert state.result() == "done"
    states = client.read_flow_run_states(state.state_details.flow_run_id)
    assert [s.type for s in states].count(StateType.PAUSED) == 1


def test_tasks_submitted_while_paused_start_after_resume(client: Any) -> None:
    started: list[float] = []

    @task
    def stamp() -> None:
        started.append(time.monotonic())

    @flow
    def gated() -> None:
        def submit_later() -> None:
            time.sleep(0.3)  # the flow is paused by now
            stamp.submit().wait()

        # the submitting thread runs in the flow's context, as a user's thread would
        helper = threading.Thread(target=contextvars.copy_context().run, args=(submit_later,))
        helper.start()
        pause_flow_run(timeout=30, poll_interval=0.05)
        helper.join()

    thread, _ = _in_thread(lambda: gated(return_state=True))
    run = _paused_run(client, "gated")
    time.sleep(1.0)
    assert started == []
    resumed_at = time.monotonic()
    resume_flow_run(run.id)
    thread.join(20)
    assert len(started) == 1 and started[0] >= resumed_at


def test_suspend_leaves_the_flow_and_resume_reschedules(client: Any) -> None:
    ran_after: list[bool] = []

    @flow
    def suspends() -> None:
        suspend_flow_run(timeout=60)
        ran_after.append(True)

    state = suspends(return_state=True)
    assert state.is_paused() and state.name == "Suspended" and ran_after == []
    run_id = state.state_details.flow_run_id
    resume_flow_run(run_id)
    run = client.read_flow_run(run_id)
    assert run.state_type == StateType.SCHEDULED and run.state_name == "Resuming"


def test_suspend_another_run_by_id(client: Any) -> None:
    @flow
    def paused_elsewhere() -> None:
        pause_flow_run(timeout=30, poll_interval=0.05)

    thread, out = _in_thread(lambda: paused_elsewhere(return_state=True))
    run = _paused_run(client, "paused-elsewhere")
    suspend_flow_run(flow_run_id=run.id)
    thread.join(20)
    assert out["state"].name == "Suspended"
    assert client.read_flow_run(run.id).state.state_details.pause_reschedule


def test_pause_outside_a_flow_is_a_clear_error(api: Any) -> None:
    with pytest.raises(RuntimeError, match="inside a running flow"):
        pause_flow_run()


_PAUSING_FLOW = """
import sys
from pydantic import BaseModel
from prefray import flow, pause_flow_run

class Approval(BaseModel):
    approved: bool

@flow
def child_approval(n: int) -> int:
    got = pause_flow_run(wait_for_input=Approval, timeout=60, poll_interval=0.1)
    return n if got.approved else -n

if __name__ == "__main__":
    state = child_approval(int(sys.argv[1]), return_state=True)
    print("RESULT", state.result())
"""


@pytest.mark.slow
@pytest.mark.parametrize("resumer", ["cli", "client"])
def test_pause_in_one_process_resume_from_another(
    client: Any, tmp_path: Path, resumer: str
) -> None:
    script = tmp_path / "pausing.py"
    script.write_text(_PAUSING_FLOW)
    env = dict(os.environ)
    child = subprocess.Popen(
        [sys.executable, str(script), "5"], env=env, stdout=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        run = _paused_run(client, "child-approval", timeout=60)
        if resumer == "cli":
            args = ["flow-run", "resume", str(run.id)]
            bad = subprocess.run(
                [sys.executable, "-m", "prefray.cli", *args, "--input", '{"approved": 3}'],
                env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert bad.returncode == 1 and "invalid" in bad.stderr
            ok = subprocess.run(
                [sys.executable, "-m", "prefray.cli", *args, "--input", '{"approved": true}'],
                env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert ok.returncode == 0, ok.stderr
        else:
            resume_flow_run(run.id, {"approved": True})
        output, _ = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, 9)
    assert child.returncode == 0 and "RESULT 5" in output
    assert client.read_flow_run(run.id).state_type == StateType.COMPLETED
