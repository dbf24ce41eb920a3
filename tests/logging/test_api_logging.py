"""Records reach a real API server with the right run ids; flush is bounded
when the API is down."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from prefray.client import get_client
from prefray.client.embedded import EmbeddedAPI
from prefray.context import FlowRunContext, TaskRunContext
from prefray.logging import flush_logs, get_run_logger, patch_print
from prefray.schemas import FlowRun, TaskRun, TaskRunCreate
from prefray.settings import Settings, use_settings


@pytest.fixture
def settings(embedded_api: EmbeddedAPI, tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, api_url=embedded_api.url, api_max_retries=2)


@pytest.fixture
def runs(settings: Settings) -> tuple[FlowRun, TaskRun]:
    with use_settings(settings), get_client(sync_client=True) as client:
        flow_run = client.create_flow_run("pipe")
        task_run = client.create_task_run(
            TaskRunCreate(
                id=uuid.uuid4(),
                name="score-0",
                flow_run_id=flow_run.id,
                task_key="m.score",
                dynamic_key="0",
            )
        )
    return flow_run, task_run


def test_records_land_in_the_api_with_their_run_ids(
    settings: Settings, runs: tuple[FlowRun, TaskRun]
) -> None:
    flow_run, task_run = runs
    with use_settings(settings):
        with FlowRunContext(flow_run=flow_run):
            get_run_logger().warning("flow says %s", "hi")
            logging.getLogger("prefray.engine").info("no run id: console only")
        with TaskRunContext(task_run=task_run, flow_run_id=flow_run.id):
            get_run_logger().info("task says %d", 42)
            get_run_logger().debug("below the level")
            try:
                1 / 0  # noqa: B018
            except ZeroDivisionError:
                get_run_logger().exception("it broke")
            with patch_print():
                print("printed", "line")
        assert flush_logs(10)
        with get_client(sync_client=True) as client:
            flow_logs = client.read_logs(flow_run_id=flow_run.id)
            task_logs = client.read_logs(task_run_id=task_run.id)
    assert [log.message.splitlines()[0] for log in flow_logs] == [
        "flow says hi",
        "task says 42",
        "it broke",
        "printed line",
    ]
    assert [log.name for log in flow_logs] == ["prefray.flow_runs"] + ["prefray.task_runs"] * 3
    assert flow_logs[0].task_run_id is None
    assert [log.message.splitlines()[0] for log in task_logs] == [
        "task says 42",
        "it broke",
        "printed line",
    ]
    assert all(log.flow_run_id == flow_run.id for log in task_logs)
    assert "ZeroDivisionError" in task_logs[1].message and task_logs[1].level == logging.ERROR


def test_logging_to_api_off_sends_nothing(
    settings: Settings, runs: tuple[FlowRun, TaskRun]
) -> None:
    flow_run, _ = runs
    off = settings.with_overrides(logging_to_api=False)
    with use_settings(off), FlowRunContext(flow_run=flow_run):
        get_run_logger().info("console only")
    with use_settings(settings):
        assert flush_logs(10)
        with get_client(sync_client=True) as client:
            assert client.read_logs(flow_run_id=flow_run.id) == []


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_flush_is_bounded_when_the_api_is_down(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import time, uuid
        from prefray.context import TaskRunContext
        from prefray.logging import flush_logs, get_run_logger
        from prefray.schemas import TaskRun

        run = TaskRun(id=uuid.uuid4(), name="t", task_key="k", dynamic_key="0")
        with TaskRunContext(task_run=run):
            for i in range(3):
                get_run_logger().info("record %d", i)
        start = time.monotonic()
        ok = flush_logs()
        print(f"flush={ok} took={time.monotonic() - start:.2f}", flush=True)
        """
    )
    env = {
        "PREFRAY_HOME": str(tmp_path),
        "PREFRAY_API_URL": f"http://127.0.0.1:{_dead_port()}",
        "PREFRAY_LOG_FLUSH_TIMEOUT": "1",
        "PREFRAY_LOG_BATCH_INTERVAL": "0.1",
        "PATH": "/usr/bin:/bin",
    }
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    flushed, took = proc.stdout.split()
    assert flushed == "flush=False"
    assert 0.9 <= float(took.split("=")[1]) < 2.0
    # the exit flush waits one more log_flush_timeout, then says what was lost
    assert elapsed < 15
    assert "could not send 3 log records to the API at http://127.0.0.1" in proc.stderr
    assert "3 log records were lost" in proc.stderr
    assert "before exit" in proc.stderr
