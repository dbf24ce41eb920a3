"""BatchShipper: the background batching under log shipping and state reports.

The `send` functions here are in-test fakes: these tests are about batching,
order, flush and retry semantics; the real client and server are exercised in
test_api_logging.py and tests/engine/test_reporting.py.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import prefray.logging as plog
from prefray.exceptions import APIUnavailable, InvalidRequest
from prefray.logging import BatchShipper
from prefray.settings import Settings

S1 = Settings(api_url="http://127.0.0.1:1")
S2 = Settings(api_url="http://127.0.0.1:2")


class Recorder:
    def __init__(self, fail: Callable[[list[Any]], BaseException | None] | None = None) -> None:
        self.batches: list[tuple[Settings, list[Any]]] = []
        self.fail = fail
        self.attempts = 0

    def __call__(self, settings: Settings, items: list[Any]) -> None:
        self.attempts += 1
        if self.fail is not None:
            exc = self.fail(items)
            if exc is not None:
                raise exc
        self.batches.append((settings, list(items)))

    @property
    def items(self) -> list[Any]:
        return [item for _, batch in self.batches for item in batch]


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plog, "_BACKOFF_BASE", 0.01)


def shipper(send: Recorder, **kw: Any) -> BatchShipper:
    options = {"what": "things", "send": send, "interval": 10.0, "batch_size": 1000}
    return BatchShipper(**{**options, **kw})


def test_batches_by_size_and_keeps_order() -> None:
    rec = Recorder()
    s = shipper(rec, max_request_items=2000)
    for i in range(5000):
        s.put(i, S1)
    assert s.flush(10)
    assert rec.items == list(range(5000))
    assert len(rec.batches) <= 8
    assert all(len(b) <= 2000 for _, b in rec.batches)


def test_sends_on_the_interval_without_a_flush() -> None:
    rec = Recorder()
    s = shipper(rec, interval=0.05, batch_size=10**6)
    s.put("x", S1)
    deadline = time.monotonic() + 5
    while not rec.items and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rec.items == ["x"]


def test_flush_with_nothing_queued_returns_at_once() -> None:
    s = shipper(Recorder())
    start = time.monotonic()
    assert s.flush(5)
    assert time.monotonic() - start < 0.1


def test_flush_is_bounded_when_send_hangs() -> None:
    release = threading.Event()

    def hang(settings: Settings, items: list[Any]) -> None:
        release.wait(10)

    s = BatchShipper(what="things", send=hang, interval=10, batch_size=1000)
    s.put(1, S1)
    start = time.monotonic()
    assert s.flush(0.3) is False
    assert 0.25 < time.monotonic() - start < 2
    release.set()
    assert s.flush(5)


def test_retries_until_the_api_answers_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    rec = Recorder(fail=lambda items: APIUnavailable("down") if rec.attempts <= 3 else None)
    s = shipper(rec)
    for i in range(10):
        s.put(i, S1)
    assert s.flush(10)
    assert rec.items == list(range(10))
    err = capsys.readouterr().err
    assert err.count("could not send 10 things") == 1  # once per outage, not per retry
    assert "APIUnavailable: down" in err and "reachable again" in err


def test_flush_raising_on_failure_keeps_the_items() -> None:
    down = True
    rec = Recorder(fail=lambda items: APIUnavailable("down") if down else None)
    s = shipper(rec)
    s.put("a", S1)
    with pytest.raises(APIUnavailable, match="1 things could not be sent: APIUnavailable: down"):
        s.flush(10, raise_on_failure=True)
    assert s.pending() == 1
    down = False
    assert s.flush(10, raise_on_failure=True)
    assert rec.items == ["a"]


def test_refused_items_are_dropped_loudly(capsys: pytest.CaptureFixture[str]) -> None:
    rec = Recorder(fail=lambda items: InvalidRequest("bad body", 422) if "bad" in items else None)
    s = shipper(rec)
    s.put("ok1", S1)
    s.put("bad", S2)
    s.put("ok2", S1)
    assert s.flush(5)
    assert rec.items == ["ok1", "ok2"]
    assert "dropped 1 things" in capsys.readouterr().err


def test_too_large_requests_are_split() -> None:
    rec = Recorder(fail=lambda items: InvalidRequest("too big", 413) if len(items) > 10 else None)
    s = shipper(rec)
    for i in range(95):
        s.put(i, S1)
    assert s.flush(5)
    assert rec.items == list(range(95))
    assert max(len(b) for _, b in rec.batches) <= 10


def test_a_batch_is_split_where_the_settings_change() -> None:
    rec = Recorder()
    s = shipper(rec)
    for i, settings in enumerate([S1, S1, S2, S1]):
        s.put(i, settings)
    assert s.flush(5)
    assert [(st.api_url[-1], b) for st, b in rec.batches] == [("1", [0, 1]), ("2", [2]), ("1", [3])]


def test_equal_settings_share_a_batch() -> None:
    rec = Recorder()
    s = shipper(rec)
    s.put(1, Settings(api_url="http://x"))
    s.put(2, Settings(api_url="http://x"))
    assert s.flush(5)
    assert len(rec.batches) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_empty_with_its_own_thread() -> None:
    release = threading.Event()
    sent: list[Any] = []

    def send(settings: Settings, items: list[Any]) -> None:
        if os.getpid() == parent:
            release.wait(10)
        sent.extend(items)

    parent = os.getpid()
    s = BatchShipper(what="things", send=send, interval=10, batch_size=1000)
    s.put("parent", S1)
    s.flush(0.05)  # the parent's thread is now stuck in send
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            ok = s.pending() == 0
            s.put("child", S1)
            ok = ok and s.flush(5) and sent == ["child"]
            os.write(write_fd, b"ok" if ok else repr((s.pending(), sent)).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    answer = os.read(read_fd, 200)
    os.waitpid(pid, 0)
    release.set()
    assert answer == b"ok"
    assert s.flush(5) and sent == ["parent"]


def test_put_many_and_put_pairs_queue_as_puts_would() -> None:
    rec = Recorder()
    s = shipper(rec)
    s.put(0, S1)
    s.put_many([1, 2], S1)
    s.put_many([], S2)  # nothing: no item, no split
    s.put_pairs([(S2, 3), (S1, 4), (S1, 5)])
    s.put_pairs([])
    s.put(6, S1)
    assert s.pending() == 7
    assert s.flush(5)
    assert [(st.api_url[-1], b) for st, b in rec.batches] == [
        ("1", [0, 1, 2]),
        ("2", [3]),
        ("1", [4, 5, 6]),
    ]


def test_put_many_wakes_the_sender_when_a_batch_is_due() -> None:
    rec = Recorder()
    s = shipper(rec, batch_size=10)  # the interval (10 s) would not send them in time
    s.put_many(list(range(9)), S1)
    time.sleep(0.3)
    assert rec.items == []  # not due yet
    s.put_many([9, 10], S1)
    deadline = time.monotonic() + 5
    while rec.items != list(range(11)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rec.items == list(range(11))


def test_groups_split_only_where_the_settings_differ() -> None:
    def reference(batch: list[tuple[Settings, Any]]) -> list[tuple[Settings, list[Any]]]:
        out: list[tuple[Settings, list[Any]]] = []
        for settings, item in batch:
            if out and (out[-1][0] is settings or out[-1][0] == settings):
                out[-1][1].append(item)
            else:
                out.append((settings, [item]))
        return out

    rng = random.Random(4)
    choices = [S1, S2, Settings(api_url="http://127.0.0.1:1")]  # the third equals S1
    for _ in range(200):
        batch = [(rng.choice(choices), i) for i in range(rng.randint(0, 12))]
        got = list(plog._groups(batch))
        want = reference(batch)
        assert len(got) == len(want)
        for (settings, items), (wanted_settings, wanted_items) in zip(got, want, strict=True):
            assert settings == wanted_settings and items == wanted_items


def test_a_sent_part_leaves_the_rest_queued_in_order() -> None:
    # the sender takes at most max_request_items per request; what it sent leaves
    # the head of the queue, what was put meanwhile stays behind it
    rec = Recorder()
    s = shipper(rec, max_request_items=3)
    s.put_many(list(range(8)), S1)
    assert s.flush(5)
    assert rec.items == list(range(8))
    assert [len(b) for _, b in rec.batches] == [3, 3, 2]
    assert s.pending() == 0
