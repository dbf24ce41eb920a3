"""Pausing, suspending and resuming flow runs.

`resume_flow_run` works against the API today; `pause_flow_run` and
`suspend_flow_run` (which need the engine to wait for or leave a run in Paused)
are planned in issue 5 and raise NotImplementedError until then.
"""

from __future__ import annotations

import uuid
from typing import Any

from prefray.exceptions import FlowPauseTimeout, NotPausedError
from prefray.schemas import SetStateStatus

__all__ = ["pause_flow_run", "resume_flow_run", "suspend_flow_run"]


def pause_flow_run(*args: Any, **kwargs: Any) -> Any:
    """Pause the current flow run until resumed (planned in issue 5)."""
    raise NotImplementedError("pause_flow_run is planned in issue 5 and not available yet.")


def suspend_flow_run(*args: Any, **kwargs: Any) -> Any:
    """Suspend the current flow run, releasing its process (planned in issue 5)."""
    raise NotImplementedError("suspend_flow_run is planned in issue 5 and not available yet.")


def resume_flow_run(flow_run_id: uuid.UUID | str, run_input: dict[str, Any] | None = None) -> None:
    """Resume a paused flow run. Raises NotPausedError if it is not paused."""
    from prefray.client import get_client

    run_id = uuid.UUID(str(flow_run_id))
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(run_id)
        if flow_run.state is None or not flow_run.state.is_paused():
            raise NotPausedError(f"Cannot resume flow run {run_id}: it is not paused.")
        result = client.resume_flow_run(run_id, run_input=run_input)
    if result.status == SetStateStatus.REJECT:
        if result.state is not None and result.state.is_failed():
            raise FlowPauseTimeout(f"Flow run {run_id} can no longer be resumed.")
        raise NotPausedError(f"Cannot resume flow run {run_id}: {result.reason}")
