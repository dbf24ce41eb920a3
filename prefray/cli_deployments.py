"""The `prefray` commands for deployments, workers and cancellation (issue 5).

    prefray deploy path/to/file.py:flow_fn --name NAME [-p key=value ...] [--tag T]
    prefray deployment ls [--json]
    prefray deployment run FLOW/NAME [-p key=value ...] [--json]
    prefray worker start [--limit N] [--poll-interval S]
    prefray flow-run cancel ID

`-p` values are read as JSON when they parse (`-p n=3` is the number 3,
`-p day=monday` the string "monday").
"""

from __future__ import annotations

import json
from typing import Any, Optional

import typer
from pydantic import TypeAdapter
from rich.table import Table

from prefray.schemas import Deployment, FlowRun
from prefray.states import Cancelled, Cancelling, StateType

__all__ = ["parse_params", "register"]

# the `prefray.cli` module whose helpers (client, errors, output) these commands use
cli: Any = None

ParamOption = typer.Option([], "--param", "-p", help="A parameter as key=value; repeatable.")


def parse_params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"-p {pair!r} is not key=value, e.g. -p n=3")
        try:
            params[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            params[key.strip()] = raw
    return params


def deploy(
    entrypoint: str = typer.Argument(..., help="path/to/file.py:flow_fn or module:flow_fn"),
    name: str = typer.Option(..., "--name", "-n", help="The deployment's name."),
    params: list[str] = ParamOption,
    tag: list[str] = typer.Option([], "--tag", "-t", help="A tag for its runs; repeatable."),
    description: Optional[str] = typer.Option(None, help="What the deployment is for."),
) -> None:
    """Register a flow, by entrypoint, with default parameters (run from this directory)."""
    from prefray.engine.loader import load_flow_from_entrypoint

    flow = load_flow_from_entrypoint(entrypoint)
    spec = flow.to_deployment(
        name,
        parameters=parse_params(params),
        tags=tag,
        description=description,
        entrypoint=entrypoint,
    )
    with cli._client():  # the API must be up (embedded if no URL) before apply()
        deployment = spec.apply()
    cli.console.print(
        f"Deployment {deployment.flow_name}/{deployment.name} ({deployment.id}) registered; "
        f"run it with: prefray deployment run '{deployment.flow_name}/{deployment.name}'"
    )


def deployment_ls(as_json: bool = typer.Option(False, "--json")) -> None:
    """List deployments."""
    with cli._client() as client:
        found = client.read_deployments()
    if as_json:
        return cli._print_json(TypeAdapter(list[Deployment]), found)
    table = Table("Name", "ID", "Entrypoint", "Parameters", title="Deployments")
    for d in found:
        table.add_row(f"{d.flow_name}/{d.name}", str(d.id), d.entrypoint, json.dumps(d.parameters))
    cli.console.print(table if found else "No deployments.")


def deployment_run(
    name: str = typer.Argument(..., help="FLOW_NAME/DEPLOYMENT_NAME"),
    params: list[str] = ParamOption,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Create a Scheduled flow run of the deployment (a worker runs it)."""
    with cli._client() as client:
        deployment = client.read_deployment_by_name(name)
        run = client.create_flow_run_from_deployment(deployment.id, parameters=parse_params(params))
    if as_json:
        return cli._print_json(TypeAdapter(FlowRun), run)
    cli.console.print(f"Created flow run {run.name!r} ({run.id}) of {name}, ", end="")
    cli.console.print(cli._state_text(run.state_type, run.state_name))


def worker_start(
    limit: Optional[int] = typer.Option(None, min=1, help="At most this many runs at once."),
    poll_interval: float = typer.Option(2.0, min=0.05, help="Seconds between polls."),
) -> None:
    """Poll for scheduled flow runs and run each in its own process, until stopped."""
    from prefray.worker import Worker

    with cli._client() as client:
        worker = Worker(client, limit=limit, poll_interval=poll_interval)
        cli.console.print(f"Worker started (limit {limit or 'none'}); Ctrl-C to stop.")
        worker.run()
    cli.console.print("Worker stopped.")


def flow_run_cancel(id: str = typer.Argument(..., help="The flow run's id.")) -> None:
    """Cancel a flow run: a running one is stopped by its worker, then ends Cancelled."""
    with cli._client() as client:
        run = client.read_flow_run(id)
        state = run.state
        if state is None or state.is_final():
            raise cli._fail(
                f"Flow run {id} is already {run.state_name}; there is nothing to cancel"
            )
        # nothing runs a Scheduled or Suspended run: it ends Cancelled at once
        idle = state.type == StateType.SCHEDULED or (
            state.is_paused() and state.state_details.pause_reschedule
        )
        proposed = Cancelled(message="Cancelled by request.") if idle else Cancelling()
        result = client.set_flow_run_state(run.id, proposed)
    if result.state is None or result.state.type != proposed.type:
        raise cli._fail(f"Flow run {id} was not cancelled: {result.reason}")
    cli.console.print(f"Flow run {id} is {proposed.name}.")


def register(cli_module: Any) -> None:
    """Add these commands to `cli_module.app` (and its `flow-run` group)."""
    global cli
    cli = cli_module
    wrap = cli_module.friendly_errors
    app, flow_run_app = cli_module.app, cli_module.flow_run_app
    deployment_app = typer.Typer(no_args_is_help=True, help="List and run deployments.")
    worker_app = typer.Typer(no_args_is_help=True, help="Run scheduled flow runs.")
    app.add_typer(deployment_app, name="deployment")
    app.add_typer(worker_app, name="worker")
    app.command("deploy")(wrap(deploy))
    deployment_app.command("ls")(wrap(deployment_ls))
    deployment_app.command("run")(wrap(deployment_run))
    worker_app.command("start")(wrap(worker_start))
    flow_run_app.command("cancel")(wrap(flow_run_cancel))
