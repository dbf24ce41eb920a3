"""Deployments end to end: `prefray deploy`, `prefray deployment run`, a worker in
its own process running the run with `python -m prefray.engine`; suspend and
resume with no completed task executed twice; cancellation; loader failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from deploy_flow_sources import DIES, SIMPLE, SLOW, SUSPENDING
from deploy_helpers import run_cli, wait_for

from prefray import resume_flow_run
from prefray.schemas import FlowRun
from prefray.states import Scheduled, StateType


def _deploy(tmp_path: Path, source: str, entry: str, name: str, *params: str) -> str:
    (tmp_path / "flows.py").write_text(source)
    args = ["deploy", f"flows.py:{entry}", "--name", name]
    for p in params:
        args += ["-p", p]
    out = run_cli(*args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _run_deployment(tmp_path: Path, name: str, *params: str) -> FlowRun:
    args = ["deployment", "run", name, "--json"]
    for p in params:
        args += ["-p", p]
    out = run_cli(*args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return FlowRun.model_validate_json(out.stdout)


def _final(client: Any, run_id: Any, timeout: float = 60) -> FlowRun:
    def done() -> FlowRun | None:
        run = client.read_flow_run(run_id)
        return run if run.state and run.state.is_final() else None

    return wait_for(done, timeout)


@pytest.mark.slow
def test_deployment_runs_end_to_end_by_a_worker(client, worker, tmp_path, monkeypatch) -> None:
    out_file = tmp_path / "out.txt"
    monkeypatch.setenv("OUT_FILE", str(out_file))
    _deploy(tmp_path, SIMPLE, "greet", "daily", "name=ann", "n=2")
    deployment = client.read_deployment_by_name("greet/daily")
    assert deployment.parameters == {"name": "ann", "n": 2}

    run = _run_deployment(tmp_path, "greet/daily", "n=5")
    assert run.state_type == StateType.SCHEDULED
    assert run.deployment_id == deployment.id
    assert run.parameters == {"name": "ann", "n": 5}
    worker("--limit", "2")
    final = _final(client, run.id)
    assert final.state_type == StateType.COMPLETED, final.state
    assert out_file.read_text() == "ann:10\n"
    assert final.infrastructure_pid  # the engine process recorded itself
    names = [s.name for s in client.read_flow_run_states(run.id)]
    assert names[:3] == ["Scheduled", "Pending", "Running"], names


@pytest.mark.slow
def test_suspend_resume_reruns_without_repeating_completed_tasks(
    client, worker, tmp_path, monkeypatch
) -> None:
    counts = tmp_path / "counts.txt"
    monkeypatch.setenv("COUNT_FILE", str(counts))
    _deploy(tmp_path, SUSPENDING, "suspending", "s")
    run = _run_deployment(tmp_path, "suspending/s", "n=3")
    worker()

    def suspended() -> bool:
        state = client.read_flow_run(run.id).state
        return state.is_paused() and state.state_details.pause_reschedule

    wait_for(suspended, 60)
    assert sorted(counts.read_text().split()) == ["fetch-0", "fetch-1", "fetch-2"]
    with pytest.raises(ValueError, match="invalid"):
        resume_flow_run(run.id, "not a number")
    resume_flow_run(run.id, 2)
    assert client.read_flow_run(run.id).state_name in ("Resuming", "Pending", "Running")
    final = _final(client, run.id)
    assert final.state_type == StateType.COMPLETED, final.state
    assert sorted(counts.read_text().split()) == ["combine", "fetch-0", "fetch-1", "fetch-2"]
    assert final.state.result() == (0 + 10 + 20) * 2 if final.state.data else True


@pytest.mark.slow
def test_cancel_stops_the_process_and_ends_cancelled(client, worker, tmp_path, monkeypatch):
    out_file = tmp_path / "out.txt"
    monkeypatch.setenv("OUT_FILE", str(out_file))
    _deploy(tmp_path, SLOW, "slow", "long")
    run = _run_deployment(tmp_path, "slow/long")
    worker()
    wait_for(lambda: out_file.exists() and out_file.read_text(), 60)
    pid = int(out_file.read_text().split()[1])
    out = run_cli("flow-run", "cancel", str(run.id))
    assert out.returncode == 0, out.stderr
    final = _final(client, run.id, 30)
    assert final.state_type == StateType.CANCELLED, final.state
    wait_for(lambda: not _alive(pid), 10)
    again = run_cli("flow-run", "cancel", str(run.id))
    assert again.returncode == 1 and "already Cancelled" in again.stderr


@pytest.mark.slow
def test_a_process_that_dies_ends_its_run_crashed(client, worker, tmp_path) -> None:
    _deploy(tmp_path, DIES, "dies", "boom")
    run = _run_deployment(tmp_path, "dies/boom")
    worker()
    final = _final(client, run.id)
    assert final.state_type == StateType.CRASHED
    assert "exited with status 3" in final.state.message


def test_cancel_a_scheduled_run_needs_no_worker(client, tmp_path) -> None:
    run = client.create_flow_run("f", state=Scheduled(), entrypoint="x.py:f")
    out = run_cli("flow-run", "cancel", str(run.id))
    assert out.returncode == 0, out.stderr
    assert client.read_flow_run(run.id).state_type == StateType.CANCELLED


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# python -m prefray.engine ------------------------------------------------------------
def _engine(run_id: Any, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "prefray.engine", str(run_id)],
        capture_output=True, text=True, cwd=cwd, timeout=60, env=dict(os.environ),
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("source", "entry", "message"),
    [
        (None, "missing.py:f", "does not exist"),
        ("import no_such_module_xyz\n", "bad.py:f", "ModuleNotFoundError"),
        ("from prefray import flow\n@flow\ndef g():\n    return 1\n", "wrong.py:f", "flows "
         "defined there: g"),
        ("def f():\n    return 1\n", "plain.py:f", "not a flow"),
    ],
)  # fmt: skip
def test_a_flow_that_cannot_be_loaded_ends_failed(client, tmp_path, source, entry, message):
    if source is not None:
        (tmp_path / entry.split(":")[0]).write_text(source)
    path = tmp_path / entry.split(":")[0]
    run = client.create_flow_run("f", state=Scheduled(), entrypoint=f"{path}:{entry.split(':')[1]}")
    out = _engine(run.id, tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    final = client.read_flow_run(run.id)
    assert final.state_type == StateType.FAILED
    assert "could not be loaded" in final.state.message and message in final.state.message


@pytest.mark.slow
def test_engine_validates_parameters_and_applies_the_flow_retry_policy(client, tmp_path):
    (tmp_path / "r.py").write_text(
        "from prefray import flow\n"
        "@flow(retries=2)\n"
        "def r(n: int, fail: bool = True) -> int:\n"
        "    with open('attempts.txt', 'a') as fh:\n"
        "        fh.write('x')\n"
        "    if len(open('attempts.txt').read()) < 3:\n"
        "        raise ValueError('not yet')\n"
        "    return n\n"
    )
    run = client.create_flow_run(
        "r", state=Scheduled(), entrypoint=f"{tmp_path}/r.py:r", parameters={"n": "4"}
    )
    out = _engine(run.id, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    final = client.read_flow_run(run.id)
    assert final.state_type == StateType.COMPLETED and final.run_count == 3
    assert final.empirical_policy.retries == 2
    assert final.state.result() == 4 if final.state.data else True

    bad = client.create_flow_run(
        "r", state=Scheduled(), entrypoint=f"{tmp_path}/r.py:r", parameters={"n": "x", "zz": 1}
    )
    out = _engine(bad.id, tmp_path)
    assert out.returncode == 1
    state = client.read_flow_run(bad.id).state
    assert state.is_failed() and "zz" in state.message

    assert _engine("not-a-uuid", tmp_path).returncode == 2
