"""Run loggers, the console format and log_prints (no API: logging_to_api off)."""

from __future__ import annotations

import builtins
import logging
import sys
import threading
import uuid
from collections.abc import Iterator

import pytest

from prefray.context import FlowRunContext, TaskRunContext
from prefray.exceptions import MissingContextError, PrefrayError
from prefray.logging import get_run_logger, patch_print
from prefray.schemas import FlowRun, TaskRun
from prefray.settings import temporary_settings


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    handler = ListHandler()
    logger = logging.getLogger("prefray")
    logger.addHandler(handler)
    with temporary_settings(logging_to_api=False):
        yield handler.records
    logger.removeHandler(handler)


def a_task_run(name: str = "score-0", flow_run_id: uuid.UUID | None = None) -> TaskRun:
    return TaskRun(
        id=uuid.uuid4(), name=name, flow_run_id=flow_run_id, task_key="m.score", dynamic_key="0"
    )


def test_outside_a_run_is_a_clear_error() -> None:
    with pytest.raises(MissingContextError, match="inside a @flow or @task"):
        get_run_logger()
    assert issubclass(MissingContextError, PrefrayError)


def test_task_run_records_carry_both_ids(records: list[logging.LogRecord]) -> None:
    flow_run_id = uuid.uuid4()
    task_run = a_task_run(flow_run_id=flow_run_id)
    with TaskRunContext(task_run=task_run, flow_run_id=flow_run_id, flow_name="pipe"):
        get_run_logger().info("scoring %s", 3, extra={"custom": 1})
    (record,) = records
    assert record.name == "prefray.task_runs"
    assert record.getMessage() == "scoring 3"
    assert record.task_run_id == str(task_run.id)
    assert record.flow_run_id == str(flow_run_id)
    assert record.task_run_name == "score-0" and record.custom == 1


def test_task_run_falls_back_to_the_task_runs_flow_run_id(
    records: list[logging.LogRecord],
) -> None:
    flow_run_id = uuid.uuid4()
    with TaskRunContext(task_run=a_task_run(flow_run_id=flow_run_id)):
        get_run_logger().info("x")
    assert records[0].flow_run_id == str(flow_run_id)


def test_flow_run_records(records: list[logging.LogRecord]) -> None:
    flow_run = FlowRun(id=uuid.uuid4(), name="brave-fox", flow_name="pipe")
    with FlowRunContext(flow_run=flow_run):
        get_run_logger().warning("hello")
    (record,) = records
    assert record.name == "prefray.flow_runs"
    assert record.flow_run_id == str(flow_run.id)
    assert getattr(record, "task_run_id", None) is None


def test_console_line_is_concise(capsys: pytest.CaptureFixture[str]) -> None:
    with temporary_settings(logging_to_api=False), TaskRunContext(task_run=a_task_run()):
        get_run_logger().info("scoring %s", 3)
    err = capsys.readouterr().err
    assert "| INFO    | Task run 'score-0' - scoring 3" in err


def test_print_goes_to_the_run_logger_only_inside_the_block(
    records: list[logging.LogRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    original = builtins.print
    with TaskRunContext(task_run=a_task_run()), patch_print():
        print("hello", 42, sep="-")
        print("to stderr", file=sys.stderr)
    print("after")
    assert builtins.print is original
    assert [r.getMessage() for r in records] == ["hello-42"]
    assert records[0].levelno == logging.INFO
    out, err = capsys.readouterr()
    assert out == "after\n"
    assert "to stderr\n" in err


def test_print_patch_disabled_for_a_nested_run(records: list[logging.LogRecord]) -> None:
    with TaskRunContext(task_run=a_task_run()), patch_print():
        with patch_print(enabled=False):
            print("plain")
        print("logged")
    assert [r.getMessage() for r in records] == ["logged"]


def test_print_patching_is_per_thread(
    records: list[logging.LogRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    runs = {name: a_task_run(name) for name in ("a", "b")}
    both_inside = threading.Barrier(3)
    printed = threading.Barrier(3)

    def work(name: str, log_prints: bool) -> None:
        with temporary_settings(logging_to_api=False), TaskRunContext(task_run=runs[name]):
            patch = patch_print() if log_prints else patch_print(enabled=False)
            with patch:
                both_inside.wait(5)
                for i in range(50):
                    print(f"{name}{i}")
                printed.wait(5)

    threads = [
        threading.Thread(target=work, args=("a", True)),
        threading.Thread(target=work, args=("b", False)),
    ]
    for t in threads:
        t.start()
    both_inside.wait(5)
    print("driver")  # this thread has no run: plain print
    printed.wait(5)
    for t in threads:
        t.join(5)
    by_run = {r.task_run_id for r in records}
    assert by_run == {str(runs["a"].id)}
    assert [r.getMessage() for r in records] == [f"a{i}" for i in range(50)]
    out = capsys.readouterr().out
    assert "driver\n" in out and "b49\n" in out and "a0\n" not in out
    assert builtins.print.__module__ == "builtins"


def test_bad_logging_level_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefray.logging as plog

    monkeypatch.setattr(plog, "_configured", False)
    level = logging.getLogger("prefray").level
    handlers = list(logging.getLogger("prefray").handlers)
    try:
        with temporary_settings(logging_level="LOUD"), pytest.raises(ValueError, match="LOUD"):
            plog.ensure_logging_configured()
    finally:
        logging.getLogger("prefray").setLevel(level)
        assert logging.getLogger("prefray").handlers == handlers
