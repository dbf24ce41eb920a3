"""The public surface of DESIGN.md: every import path and name exists, and
`__all__` lists are sorted."""

from __future__ import annotations

import importlib

import pytest

SURFACE = {
    "prefray": [
        "flow", "task", "Flow", "Task", "State", "get_run_logger", "unmapped",
        "allow_failure", "quote", "tags", "pause_flow_run", "suspend_flow_run",
        "resume_flow_run", "get_client",
    ],
    "prefray.states": [
        "State", "StateType", "Scheduled", "Pending", "Running", "Completed", "Failed",
        "Crashed", "Cancelled", "Cancelling", "Paused", "Suspended", "AwaitingRetry",
        "Retrying", "Cached",
    ],
    "prefray.futures": ["PrefrayFuture", "wait", "as_completed"],
    "prefray.tasks": ["task_input_hash", "exponential_backoff"],
    "prefray.context": ["get_run_context", "FlowRunContext", "TaskRunContext"],
    "prefray.exceptions": [
        "PrefrayError", "MappingLengthMismatch", "MappingMissingIterable",
        "ParameterTypeError", "UpstreamTaskError", "FlowPauseTimeout", "NotPausedError",
        "ObjectNotFound",
    ],
    "prefray.client": ["get_client"],
    "prefray.testing": ["prefray_test_harness"],
    "task_runners": ["SequentialTaskRunner", "ConcurrentTaskRunner", "RayTaskRunner",
                     "remote_options"],
}  # fmt: skip


@pytest.mark.parametrize("module_name", sorted(SURFACE))
def test_names_exist(module_name: str) -> None:
    module = importlib.import_module(module_name)
    missing = []
    for name in SURFACE[module_name]:
        try:
            getattr(module, name)
        except (AttributeError, ImportError):
            missing.append(name)
    assert not missing, f"{module_name} lacks {missing}"


def test_prefray_all_is_exactly_the_design_surface() -> None:
    import prefray

    assert prefray.__all__ == sorted(SURFACE["prefray"])


@pytest.mark.parametrize("module_name", sorted(SURFACE))
def test_all_is_sorted_and_complete(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module_name} has no __all__"
    assert list(exported) == sorted(exported)
    lazy = {"RayTaskRunner", "remote_options"}
    assert set(SURFACE[module_name]) - lazy <= set(exported)


def test_future_interface() -> None:
    from prefray.futures import PrefrayFuture

    for attr in ("result", "wait", "get_state", "_wait"):
        assert callable(getattr(PrefrayFuture, attr))
