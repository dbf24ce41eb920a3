"""`prefray ...` commands, through typer's CliRunner and one real subprocess."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefray.cli import app
from prefray.client import SyncPrefrayClient, get_client
from prefray.client.embedded import start_api
from prefray.schemas import FlowRun, LogCreate, TaskRunCreate
from prefray.settings import Settings
from prefray.states import Completed, Failed, Paused, Running, now

runner = CliRunner()


def _invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def runs(harness: Settings) -> dict[str, FlowRun]:
    client = get_client(sync_client=True)
    done = client.create_flow_run("cli-flow", name="cli-done")
    client.set_flow_run_state(done.id, Running())
    client.set_flow_run_state(done.id, Completed(message="all good"))
    failed = client.create_flow_run("cli-flow", name="cli-failed")
    client.set_flow_run_state(failed.id, Running())
    client.set_flow_run_state(failed.id, Failed(message="boom"))
    client.create_task_runs(
        [
            TaskRunCreate(name=f"t-{i}", flow_run_id=done.id, task_key="t", dynamic_key=str(i))
            for i in range(3)
        ]
    )
    stamp = now()
    logs = [
        LogCreate(
            level=20,
            message=f"hello [bold]{i}[/]",
            timestamp=stamp + dt.timedelta(seconds=i),
            flow_run_id=done.id,
            name="prefray.flow_runs",
        )
        for i in range(2)
    ]
    client.create_logs(logs)
    return {"done": done, "failed": failed}


def test_flow_run_ls_json_and_table(runs: dict[str, FlowRun]) -> None:
    code, out, _ = _invoke("flow-run", "ls", "--json")
    assert code == 0
    listed = {r["name"]: r for r in json.loads(out)}
    assert listed["cli-done"]["state_type"] == "COMPLETED"
    assert listed["cli-failed"]["state_type"] == "FAILED"
    code, out, _ = _invoke("flow-run", "ls")
    assert code == 0 and "cli-done" in out and "cli-failed" in out


def test_flow_run_ls_filters_by_state_and_limit(runs: dict[str, FlowRun]) -> None:
    code, out, _ = _invoke("flow-run", "ls", "--state", "failed", "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["cli-failed"]
    code, out, _ = _invoke("flow-run", "ls", "--state", "Completed", "--json")  # a name
    assert [r["name"] for r in json.loads(out)] == ["cli-done"]
    code, out, _ = _invoke("flow-run", "ls", "--limit", "1", "--json")
    assert len(json.loads(out)) == 1
    code, _, err = _invoke("flow-run", "ls", "--limit", "0")
    assert code != 0 and "limit" in err.lower()


def test_flow_run_inspect(runs: dict[str, FlowRun]) -> None:
    run_id = str(runs["done"].id)
    code, out, _ = _invoke("flow-run", "inspect", run_id, "--json")
    data = json.loads(out)
    assert code == 0 and data["id"] == run_id and data["state"]["message"] == "all good"
    assert [s["type"] for s in data["states"]][-2:] == ["RUNNING", "COMPLETED"]
    code, out, _ = _invoke("flow-run", "inspect", run_id)
    assert code == 0 and "cli-done" in out and "all good" in out


@pytest.mark.parametrize("command", ["inspect", "logs", "resume"])
def test_bad_and_unknown_ids_exit_1_with_a_message(harness: Settings, command: str) -> None:
    code, out, err = _invoke("flow-run", command, "not-a-uuid")
    assert code == 1 and "not a valid run id" in err and "Traceback" not in out + err
    missing = str(uuid.uuid4())
    code, _, err = _invoke("flow-run", command, missing)
    assert code == 1 and "not found" in err and missing in err


def test_flow_run_logs(runs: dict[str, FlowRun]) -> None:
    code, out, _ = _invoke("flow-run", "logs", str(runs["done"].id), "--json")
    assert code == 0 and [log["message"] for log in json.loads(out)] == [
        "hello [bold]0[/]",
        "hello [bold]1[/]",
    ]
    code, out, _ = _invoke("flow-run", "logs", str(runs["done"].id))
    assert code == 0 and "INFO" in out and "hello [bold]1[/]" in out  # printed verbatim
    code, out, _ = _invoke("flow-run", "logs", str(runs["failed"].id))
    assert code == 0 and "No logs" in out


def test_flow_run_resume(harness: Settings) -> None:
    client = get_client(sync_client=True)
    run = client.create_flow_run("cli-flow", name="cli-paused")
    client.set_flow_run_state(run.id, Running())
    client.set_flow_run_state(run.id, Paused(pause_key="p1"))
    code, _, err = _invoke("flow-run", "resume", str(run.id), "--input", "[1, 2]")
    assert code == 1 and "JSON object" in err
    code, _, err = _invoke("flow-run", "resume", str(run.id), "--input", "{nope")
    assert code == 1 and "not valid JSON" in err
    code, out, _ = _invoke("flow-run", "resume", str(run.id), "--input", '{"approved": true}')
    assert code == 0 and "Resumed" in out
    assert client.read_flow_run(run.id).state_type != "PAUSED"
    code, _, err = _invoke("flow-run", "resume", str(run.id))  # not paused any more
    assert code == 1 and "was not resumed" in err


def test_task_run_ls(runs: dict[str, FlowRun]) -> None:
    code, out, _ = _invoke("task-run", "ls", "--flow-run", str(runs["done"].id), "--json")
    assert code == 0 and [t["name"] for t in json.loads(out)] == ["t-0", "t-1", "t-2"]
    code, out, _ = _invoke("task-run", "ls", "--flow-run", str(runs["done"].id))
    assert code == 0 and "t-2" in out
    code, _, err = _invoke("task-run", "ls", "--flow-run", "xyz")
    assert code == 1 and "not a valid run id" in err


def test_version(harness: Settings) -> None:
    code, out, _ = _invoke("version", "--json")
    info = json.loads(out)
    assert code == 0 and info["api_url"] == harness.api_url and info["version"]


def test_server_start_refuses_a_public_host_without_a_key(harness: Settings) -> None:
    code, out, err = _invoke("server", "start", "--host", "0.0.0.0", "--port", "1")
    assert code == 1 and "PREFRAY_API_KEY" in err and "Traceback" not in out + err


def test_real_subprocess_lists_runs_as_json(runs: dict[str, FlowRun], harness: Settings) -> None:
    exe = Path(sys.executable).with_name("prefray")
    out = subprocess.run(
        [str(exe), "flow-run", "ls", "--json"],
        env={**os.environ, "PREFRAY_API_URL": harness.api_url or ""},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert {"cli-done", "cli-failed"} <= {r["name"] for r in json.loads(out.stdout)}
    bad = subprocess.run(
        [str(exe), "flow-run", "inspect", "nope"],
        env={**os.environ, "PREFRAY_API_URL": harness.api_url or ""},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "not a valid" in bad.stderr


def test_without_a_url_the_cli_reads_the_local_database(tmp_path: Path) -> None:
    server = start_api(Settings(home=tmp_path), mode="thread")
    try:
        recorded = SyncPrefrayClient(settings=Settings(home=tmp_path, api_url=server.url))
        recorded.create_flow_run("local", name="recorded-earlier")
    finally:
        server.stop()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFRAY_")}
    out = subprocess.run(
        [str(Path(sys.executable).with_name("prefray")), "flow-run", "ls", "--json"],
        env={**env, "PREFRAY_HOME": str(tmp_path)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert [r["name"] for r in json.loads(out.stdout)] == ["recorded-earlier"]
