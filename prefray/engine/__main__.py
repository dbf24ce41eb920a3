"""`python -m prefray.engine FLOW_RUN_ID`: run an existing flow run in this process.

Loads the flow from the run's entrypoint, applies the flow's retry policy,
validates the run's parameters (the function's defaults fill the rest) and
runs it to a final state. A flow that cannot be loaded ends the run Failed
with the loader's message. Exit status: 0 when the run completed, paused or
was suspended; 1 when it ended any other way; 2 when the run does not exist.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
import uuid
from typing import Any

from prefray.engine.loader import FlowLoadError, load_flow_from_entrypoint
from prefray.exceptions import PrefrayError
from prefray.schemas import FlowRun
from prefray.states import Failed, State, now

__all__ = ["main", "run_flow_run"]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m prefray.engine FLOW_RUN_ID", file=sys.stderr)
        return 2
    try:
        run_id = uuid.UUID(args[0])
        flow_run = _client().read_flow_run(run_id)
    except (ValueError, PrefrayError) as exc:
        print(f"Error: cannot run flow run {args[0]!r}: {exc}", file=sys.stderr)
        return 2
    state = run_flow_run(flow_run)
    print(f"Flow run {flow_run.id} ({flow_run.name}) finished in state {state}")
    return 0 if state.is_completed() or state.is_paused() else 1


def run_flow_run(flow_run: FlowRun) -> State:
    """Run `flow_run` here, from its entrypoint; its final (or Paused) state."""
    current = flow_run.state
    if current is not None and current.is_final():
        return current
    try:
        flow = _load(flow_run)
    except FlowLoadError as exc:
        return _fail(flow_run, f"Flow could not be loaded: {exc}")
    unknown = _unknown_parameters(flow.fn, flow_run.parameters)
    if unknown:
        return _fail(
            flow_run,
            f"Flow run received parameters that {flow.name!r} does not take: "
            f"{', '.join(sorted(unknown))}",
        )
    _wait_for_scheduled_time(flow_run)
    from prefray.engine.flow_run import FlowRunEngine

    engine = FlowRunEngine(flow, dict(flow_run.parameters), flow_run=flow_run)
    if flow.isasync:
        return asyncio.run(engine.run_async())
    return engine.run_sync()


def _load(flow_run: FlowRun) -> Any:
    if not flow_run.entrypoint:
        raise FlowLoadError(
            f"flow run {flow_run.id} has no entrypoint; create it from a deployment "
            "(prefray deploy, then prefray deployment run)"
        )
    return load_flow_from_entrypoint(flow_run.entrypoint)


def _unknown_parameters(fn: Any, parameters: dict[str, Any]) -> set[str]:
    signature = inspect.signature(fn)
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return set()
    return set(parameters) - set(signature.parameters)


def _wait_for_scheduled_time(flow_run: FlowRun) -> None:
    state = flow_run.state
    when = state.state_details.scheduled_time if state is not None else None
    if state is not None and state.is_scheduled() and when is not None:
        time.sleep(max(0.0, (when - now()).total_seconds()))


def _fail(flow_run: FlowRun, message: str) -> State:
    state = Failed(message=message)
    with _client() as client:
        client.set_flow_run_state(flow_run.id, state)
    print(f"Error: {message}", file=sys.stderr)
    return state


def _client() -> Any:
    from prefray.client import get_client

    return get_client(sync_client=True)


if __name__ == "__main__":
    sys.exit(main())
