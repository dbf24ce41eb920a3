"""The client's public contract: `__all__`, and the same methods on both clients."""

from __future__ import annotations

import inspect

import prefray.client
from prefray.client import PrefrayClient, SyncPrefrayClient
from prefray.client._operations import Operations

DOCUMENTED = {  # docs/internals.md, "Client"
    "health", "create_flow_run", "read_flow_run", "read_flow_runs", "set_flow_run_state",
    "read_flow_run_states", "resume_flow_run", "create_task_run", "create_task_runs",
    "read_task_run", "read_task_runs", "set_task_run_state", "report_task_run_states",
    "read_task_run_states", "create_logs", "read_logs",
}  # fmt: skip


def test_all_is_sorted_and_importable() -> None:
    assert prefray.client.__all__ == sorted(prefray.client.__all__)
    for name in prefray.client.__all__:
        assert hasattr(prefray.client, name)


def test_both_clients_have_every_documented_method_with_one_signature() -> None:
    for name in DOCUMENTED:
        method = getattr(Operations, name)
        assert getattr(SyncPrefrayClient, name) is method
        assert getattr(PrefrayClient, name) is method
        assert inspect.signature(method).parameters  # real signatures, not *args
