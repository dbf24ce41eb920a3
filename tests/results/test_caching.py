"""task_input_hash and exponential_backoff (re-exported by prefray.tasks)."""

from __future__ import annotations

import subprocess
import sys
import threading
from types import SimpleNamespace

import pytest

from prefray.caching import exponential_backoff, task_input_hash


def _fn(x: int) -> int:
    return x


def _other(x: int) -> int:
    return x * 2


def _ctx(fn=_fn, key: str = "mod._fn") -> SimpleNamespace:
    return SimpleNamespace(task=SimpleNamespace(task_key=key, fn=fn), task_run=None)


def test_same_inputs_same_key() -> None:
    a = task_input_hash(_ctx(), {"x": 1, "y": [1, 2]})
    assert a == task_input_hash(_ctx(), {"y": [1, 2], "x": 1})
    assert len(a) == 64


def test_key_depends_on_inputs_task_and_code() -> None:
    base = task_input_hash(_ctx(), {"x": 1})
    assert base != task_input_hash(_ctx(), {"x": 2})
    assert base != task_input_hash(_ctx(key="mod.other"), {"x": 1})
    assert base != task_input_hash(_ctx(fn=_other), {"x": 1})


def test_key_is_stable_across_processes() -> None:
    code = (
        "from types import SimpleNamespace as N\n"
        "from prefray.caching import task_input_hash\n"
        "print(task_input_hash(N(task=N(task_key='k', fn=None), task_run=None), {'x': [1, 'a']}))"
    )
    outs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
        for _ in range(2)
    }
    ctx = SimpleNamespace(task=SimpleNamespace(task_key="k", fn=None), task_run=None)
    assert outs == {task_input_hash(ctx, {"x": [1, "a"]}) + "\n"}


def test_non_json_inputs_fall_back_to_pickle() -> None:
    import datetime as dt

    when = dt.date(2024, 1, 1)
    assert task_input_hash(_ctx(), {"d": when}) == task_input_hash(_ctx(), {"d": when})


def test_unhashable_inputs_give_none() -> None:
    assert task_input_hash(_ctx(), {"lock": threading.Lock()}) is None


def test_task_key_from_task_run_when_task_missing() -> None:
    ctx = SimpleNamespace(task=None, task_run=SimpleNamespace(task_key="k"))
    assert task_input_hash(ctx, {}) is not None


def test_exponential_backoff() -> None:
    assert exponential_backoff(10)(4) == [10, 20, 40, 80]
    assert exponential_backoff(0.5)(0) == []
    assert len(exponential_backoff(1)(100)) == 50
    with pytest.raises(ValueError, match="backoff_factor"):
        exponential_backoff(-1)
