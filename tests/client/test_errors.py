"""HTTP errors become prefray errors; retries against real servers that are
late, gone, or busy (no mocks of httpx)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from prefray.client import SyncPrefrayClient
from prefray.client.embedded import start_api
from prefray.exceptions import (
    APIUnavailable,
    InvalidRequest,
    ObjectNotFound,
    PrefrayError,
    Unauthorized,
)
from prefray.schemas import TaskRunCreate
from prefray.settings import Settings

from .helpers import Call, Flaky, free_port, serve


def test_unknown_ids_raise_object_not_found(call: Call) -> None:
    missing = uuid.uuid4()
    with pytest.raises(ObjectNotFound, match=str(missing)):
        call("read_flow_run", missing)
    with pytest.raises(ObjectNotFound):
        call("read_task_run", missing)


def test_malformed_id_is_refused_before_sending(call: Call) -> None:
    with pytest.raises(InvalidRequest, match="not a valid run id"):
        call("read_flow_run", "not-a-uuid")


def test_server_side_validation_error_names_the_field(call: Call) -> None:
    # model_construct skips the client's validation, so the server must refuse it
    bad = TaskRunCreate.model_construct(name="", task_key="k", dynamic_key="0")
    with pytest.raises(InvalidRequest, match="name") as info:
        call("create_task_run", bad)
    assert info.value.status_code == 422
    assert not isinstance(info.value, ObjectNotFound)


def test_api_key_is_sent_and_required(tmp_path: Path) -> None:
    server = start_api(Settings(home=tmp_path, api_key="s3cret"), mode="thread")
    try:
        anonymous = SyncPrefrayClient(settings=Settings(home=tmp_path, api_url=server.url))
        assert anonymous.health() == {"status": "ok"}  # health needs no key
        with pytest.raises(Unauthorized) as info:
            anonymous.read_flow_runs()
        assert info.value.status_code == 401
        wrong = Settings(home=tmp_path, api_url=server.url, api_key="nope")
        with pytest.raises(Unauthorized):
            SyncPrefrayClient(settings=wrong).read_flow_runs()
        right = Settings(home=tmp_path, api_url=server.url, api_key="s3cret")
        assert SyncPrefrayClient(settings=right).read_flow_runs() == []
    finally:
        server.stop()


def test_nothing_listening_raises_api_unavailable_naming_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = SyncPrefrayClient(settings=Settings(home=tmp_path, api_url=url, api_max_retries=1))
    with pytest.raises(APIUnavailable, match=url) as info:
        client.health()
    assert "2 attempt" in str(info.value)


def test_retries_until_a_late_server_is_up(tmp_path: Path) -> None:
    port = free_port()
    settings = Settings(home=tmp_path, api_url=f"http://127.0.0.1:{port}", api_max_retries=10)
    servers = []
    starter = threading.Timer(0.5, lambda: servers.append(start_api(settings, "thread", port)))
    starter.start()
    try:
        began = time.monotonic()
        run = SyncPrefrayClient(settings=settings).create_flow_run("late")
        assert time.monotonic() - began >= 0.5
        assert SyncPrefrayClient(settings=settings).read_flow_run(run.id).flow_name == "late"
    finally:
        starter.join()
        for server in servers:
            server.stop()


def test_a_stopped_server_raises_api_unavailable(tmp_path: Path) -> None:
    server = start_api(Settings(home=tmp_path), mode="thread")
    settings = Settings(home=tmp_path, api_url=server.url, api_max_retries=1)
    client = SyncPrefrayClient(settings=settings)
    assert client.health() == {"status": "ok"}
    server.stop()
    with pytest.raises(APIUnavailable, match=server.url):
        client.health()


@pytest.mark.parametrize("status", [429, 502, 503])
def test_busy_answers_are_retried(tmp_path: Path, status: int) -> None:
    app = Flaky(failures=2, status=status, retry_after="0" if status == 429 else None)
    with serve(app) as url:
        settings = Settings(home=tmp_path, api_url=url, api_max_retries=3)
        assert SyncPrefrayClient(settings=settings).health() == {"status": "ok"}
    assert app.requests == 3


def test_retries_are_bounded(tmp_path: Path) -> None:
    app = Flaky(failures=100, status=503)
    with serve(app) as url:
        settings = Settings(home=tmp_path, api_url=url, api_max_retries=2)
        with pytest.raises(APIUnavailable, match="503"):
            SyncPrefrayClient(settings=settings).health()
    assert app.requests == 3


def test_server_errors_are_not_retried_and_not_http_errors(tmp_path: Path) -> None:
    app = Flaky(failures=100, status=500)
    with serve(app) as url:
        settings = Settings(home=tmp_path, api_url=url, api_max_retries=3)
        with pytest.raises(PrefrayError, match="HTTP 500"):
            SyncPrefrayClient(settings=settings).health()
    assert app.requests == 1


def test_api_url_must_be_http(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an http"):
        SyncPrefrayClient(settings=Settings(home=tmp_path, api_url="127.0.0.1:4200"))
