"""Serializers, local result storage, persisted results and storage keys."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from prefray.exceptions import MissingResult, SerializationError
from prefray.results import (
    LocalFileSystem,
    format_storage_key,
    get_serializer,
    load_result,
    persist_result,
    resolve_result_storage,
)
from prefray.settings import temporary_settings
from prefray.states import ResultReference


@pytest.mark.parametrize(
    ("serializer", "value"),
    [
        ("pickle", {"a": [1, 2.5, None], "b": (1, 2), "c": {1, 2}}),
        ("pickle", lambda x: x + 1),
        ("json", {"a": [1, 2.5, None, True], "b": "é"}),
    ],
)
def test_round_trip(tmp_path: Path, serializer: str, value: object) -> None:
    ref = persist_result(value, storage=tmp_path, serializer=serializer)
    assert ref.serializer == serializer
    assert ref.storage_path == str(tmp_path.resolve())
    loaded = load_result(ref)
    if callable(value):
        assert loaded(1) == 2
    else:
        assert loaded == value


def test_json_turns_tuples_into_lists(tmp_path: Path) -> None:
    ref = persist_result((1, 2), storage=tmp_path, serializer="json")
    assert load_result(ref) == [1, 2]


def test_unknown_serializer_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="'yaml'.*'json', 'pickle'"):
        get_serializer("yaml")


def test_default_serializer_comes_from_settings() -> None:
    with temporary_settings(result_serializer="json"):
        assert get_serializer().name == "json"
    with temporary_settings(result_serializer="nope"), pytest.raises(ValueError):
        get_serializer()


def test_json_error_names_the_type(tmp_path: Path) -> None:
    with pytest.raises(SerializationError, match="datetime"):
        persist_result({"when": dt.datetime.now()}, storage=tmp_path, serializer="json")
    assert list(tmp_path.iterdir()) == []


def test_unpicklable_value_is_a_serialization_error(tmp_path: Path) -> None:
    import threading

    with pytest.raises(SerializationError, match="lock"):
        persist_result(threading.Lock(), storage=tmp_path, serializer="pickle")


def test_default_storage_is_under_prefray_home(tmp_path: Path) -> None:
    with temporary_settings(home=tmp_path):
        ref = persist_result(41, key="answer")
        assert Path(ref.storage_path) == (tmp_path / "storage").resolve()
        assert (tmp_path / "storage" / "answer").is_file()
    with temporary_settings(local_storage_path=tmp_path / "shared"):
        assert LocalFileSystem().basepath == (tmp_path / "shared").resolve()


def test_default_key_is_a_fresh_uuid_hex(tmp_path: Path) -> None:
    a = persist_result(1, storage=tmp_path)
    b = persist_result(1, storage=tmp_path)
    assert a.storage_key != b.storage_key and len(a.storage_key) == 32


def test_storage_accepts_path_or_filesystem(tmp_path: Path) -> None:
    fs = LocalFileSystem(tmp_path)
    assert resolve_result_storage(fs) is fs
    assert resolve_result_storage(str(tmp_path)) == fs
    with pytest.raises(TypeError, match="result_storage"):
        resolve_result_storage(42)  # type: ignore[arg-type]


def test_keys_with_directories_and_overwrite(tmp_path: Path) -> None:
    fs = LocalFileSystem(tmp_path)
    fs.write_bytes("a/b/c", b"1")
    fs.write_bytes("a/b/c", b"2")
    assert fs.read_bytes("a/b/c") == b"2"
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["c"]  # no tmp files


@pytest.mark.parametrize("key", ["../escape", "/abs/path", "a/../../b", ""])
def test_keys_cannot_escape_the_storage(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="invalid result storage key"):
        LocalFileSystem(tmp_path).write_bytes(key, b"x")


def test_missing_file_is_a_missing_result(tmp_path: Path) -> None:
    ref = ResultReference(storage_key="gone", storage_path=str(tmp_path))
    with pytest.raises(MissingResult, match="gone"):
        load_result(ref)


def test_read_back_in_a_fresh_process_after_the_writer_exited(tmp_path: Path) -> None:
    writer = textwrap.dedent(
        f"""
        from prefray.results import persist_result
        ref = persist_result({{"x": [1, 2]}}, storage={str(tmp_path)!r}, key="k1")
        print(ref.model_dump_json())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", writer], capture_output=True, text=True, check=True
    ).stdout
    reader = textwrap.dedent(
        f"""
        from prefray.results import load_result
        from prefray.states import ResultReference
        print(load_result(ResultReference.model_validate_json({out.strip()!r})))
        """
    )
    got = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True, check=True)
    assert got.stdout.strip() == "{'x': [1, 2]}"


def test_key_templates() -> None:
    task_run = SimpleNamespace(id="t1", name="add-3", task_key="mod.add", dynamic_key="3")
    flow_run = SimpleNamespace(id="f1", name="brave-fox", flow_name="pipe")
    key = format_storage_key(
        "{flow_run.flow_name}/{parameters[x]}-{task_run.name}",
        parameters={"x": 7},
        task_run=task_run,
        flow_run=flow_run,
    )
    assert key == "pipe/7-add-3"


@pytest.mark.parametrize("template", ["{parameters[missing]}", "{task_run.nope}", "{other}"])
def test_bad_key_template_says_which_fields_exist(template: str) -> None:
    with pytest.raises(ValueError, match="available fields"):
        format_storage_key(
            template, parameters={"x": 1}, task_run=SimpleNamespace(name="t"), flow_run=None
        )


def test_key_template_from_the_task_run_context() -> None:
    import uuid

    from prefray.context import TaskRunContext
    from prefray.results import storage_key_from_context
    from prefray.schemas import TaskRun

    flow_run_id = uuid.uuid4()
    task_run = TaskRun(
        id=uuid.uuid4(), name="add-2", flow_run_id=flow_run_id, task_key="m.add", dynamic_key="2"
    )
    ctx = TaskRunContext(
        task_run=task_run, parameters={"x": 5}, flow_run_id=flow_run_id, flow_name="pipe"
    )
    with ctx:
        key = storage_key_from_context("{flow_run.flow_name}-{flow_run.id}/{parameters[x]}")
        assert key == f"pipe-{flow_run_id}/5"
        assert storage_key_from_context("{task_run.dynamic_key}") == "2"
