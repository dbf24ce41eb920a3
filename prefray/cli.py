"""The `prefray` command line.

    prefray server start [--host 127.0.0.1] [--port 4200]
    prefray flow-run ls [--state FAILED] [--limit 20] [--json]
    prefray flow-run inspect ID [--json]
    prefray flow-run logs ID [--json]
    prefray flow-run resume ID [--input '{"approved": true}']
    prefray task-run ls --flow-run ID [--json]
    prefray concurrency-limit create TAG N | ls | inspect TAG | reset TAG | delete TAG
    prefray task-server serve module:task ... [--runner ray] [--limit 10]
    prefray version [--json]

Commands talk to `PREFRAY_API_URL`; with none set they start the embedded API
on the local SQLite database (`$PREFRAY_HOME/prefray.db`), so runs recorded by
flows run on this machine are listed. `--json` prints one JSON document.
Errors print one line and exit with status 1, never a traceback.
"""

from __future__ import annotations

import functools
import json
import platform
import sys
from collections.abc import Callable, Sequence
from typing import Any, Optional, TypeVar

import typer
from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.table import Table

from prefray.cli_deployments import register as _register_deployment_commands
from prefray.client import SyncPrefrayClient, embedded
from prefray.exceptions import PrefrayError
from prefray.schemas import FlowRun, Log, SetStateStatus, TaskRun
from prefray.settings import get_current_settings
from prefray.states import State, StateType

__all__ = ["app"]

app = typer.Typer(name="prefray", no_args_is_help=True, add_completion=False)
server_app = typer.Typer(no_args_is_help=True, help="Run the orchestration API.")
flow_run_app = typer.Typer(no_args_is_help=True, help="List, inspect and resume flow runs.")
task_run_app = typer.Typer(no_args_is_help=True, help="List task runs.")
app.add_typer(server_app, name="server")
app.add_typer(flow_run_app, name="flow-run")
app.add_typer(task_run_app, name="task-run")

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False)
F = TypeVar("F", bound=Callable[..., Any])

_STATE_STYLES = {
    StateType.COMPLETED: "green",
    StateType.FAILED: "red",
    StateType.CRASHED: "bold red",
    StateType.CANCELLED: "magenta",
    StateType.CANCELLING: "magenta",
    StateType.RUNNING: "blue",
    StateType.PAUSED: "yellow",
    StateType.SCHEDULED: "yellow",
    StateType.PENDING: "dim",
}

JsonOption = typer.Option(False, "--json", help="Print one JSON document instead of a table.")


def _client() -> SyncPrefrayClient:
    """A client for PREFRAY_API_URL, or for an embedded API on the local database.

    The CLI runs no user code, so its embedded API is a thread: it starts in a
    fraction of a subprocess's time and has no driver to compete with.
    """
    settings = get_current_settings()
    if not settings.api_url:
        embedded.ensure_api(settings, mode="thread")
    return SyncPrefrayClient()


def _fail(message: str) -> typer.Exit:
    error_console.print(f"[red]Error:[/red] {message}")
    return typer.Exit(code=1)


def friendly_errors(command: F) -> F:
    """Turn prefray's errors into one red line and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (PrefrayError, ValidationError, ValueError) as exc:
            raise _fail(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def _print_json(adapter: TypeAdapter[Any], value: Any) -> None:
    typer.echo(adapter.dump_json(value, indent=2).decode())


def _state_text(state_type: StateType | None, name: str | None) -> str:
    if state_type is None:
        return "-"
    return f"[{_STATE_STYLES.get(state_type, '')}]{name or state_type.value}[/]"


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _state_filter(states: Sequence[str]) -> dict[str, list[Any]]:
    """`--state FAILED` filters by type, `--state AwaitingRetry` by name."""
    types, names = [], []
    for raw in (part.strip() for value in states for part in value.split(",")):
        if raw.upper() in StateType.__members__:
            types.append(StateType[raw.upper()])
        elif raw:
            names.append(raw)
    out: dict[str, list[Any]] = {}
    if types:
        out["state_types"] = types
    if names:
        out["state_names"] = names
    return out


# server -----------------------------------------------------------------------
@server_app.command("start")
@friendly_errors
def server_start(
    host: Optional[str] = typer.Option(None, help="Interface to bind (default 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, help="Port to listen on (default 4200)."),
) -> None:
    """Run the API as a standalone server (SQLite, or PREFRAY_API_DATABASE_URL)."""
    from prefray.server.serve import run_server

    settings = get_current_settings()
    host = host or settings.server_host
    port = settings.server_port if port is None else port
    console.print(f"Starting the prefray API on http://{host}:{port} ({settings.database_url})")
    run_server(settings, host, port)


# flow runs --------------------------------------------------------------------
@flow_run_app.command("ls")
@friendly_errors
def flow_run_ls(
    state: list[str] = typer.Option([], "--state", help="State type or name; repeatable."),
    limit: int = typer.Option(20, min=1, max=10_000, help="At most this many runs."),
    as_json: bool = JsonOption,
) -> None:
    """List flow runs, newest first."""
    with _client() as client:
        runs = client.read_flow_runs(limit=limit, **_state_filter(state))
    if as_json:
        return _print_json(TypeAdapter(list[FlowRun]), runs)
    table = Table("ID", "Name", "Flow", "State", "Started", "Duration (s)", title="Flow runs")
    for run in runs:
        table.add_row(
            str(run.id), run.name, run.flow_name, _state_text(run.state_type, run.state_name),
            _when(run.start_time), f"{run.total_run_time:.2f}",
        )  # fmt: skip
    console.print(table if runs else "No flow runs found.")


@flow_run_app.command("inspect")
@friendly_errors
def flow_run_inspect(
    id: str = typer.Argument(..., help="The flow run's id."), as_json: bool = JsonOption
) -> None:
    """Show one flow run and its state history."""
    with _client() as client:
        run = client.read_flow_run(id)
        states = client.read_flow_run_states(run.id)
    if as_json:
        return typer.echo(
            json.dumps({**run.model_dump(mode="json"), "states": _dump_states(states)}, indent=2)
        )
    table = Table(show_header=False, title=f"Flow run {run.name}")
    for key, value in run.model_dump(exclude={"state"}).items():
        table.add_row(
            key, _state_text(run.state_type, run.state_name) if key == "state_name" else str(value)
        )
    if run.state and run.state.message:
        table.add_row("message", run.state.message)
    console.print(table)
    console.print(_states_table(states))


def _dump_states(states: list[State]) -> list[Any]:
    return [state.model_dump(mode="json") for state in states]


def _states_table(states: list[State]) -> Table:
    table = Table("Time", "State", "Message", title="States")
    for state in states:
        table.add_row(
            _when(state.timestamp), _state_text(state.type, state.name), state.message or ""
        )
    return table


@flow_run_app.command("logs")
@friendly_errors
def flow_run_logs(
    id: str = typer.Argument(..., help="The flow run's id."), as_json: bool = JsonOption
) -> None:
    """Print every log record of a flow run and its task runs, oldest first."""
    with _client() as client:
        client.read_flow_run(id)  # a clear "not found" instead of an empty listing
        logs = _all_logs(client, id)
    if as_json:
        return _print_json(TypeAdapter(list[Log]), logs)
    for log in logs:
        level = _level_name(log.level)
        console.print(f"{_when(log.timestamp)} [bold]{level:<8}[/] {log.name} - ", end="")
        console.print(log.message, markup=False)
    if not logs:
        console.print("No logs for this flow run.")


def _all_logs(client: Any, flow_run_id: str, page: int = 5_000) -> list[Log]:
    logs: list[Log] = []
    while True:
        batch = client.read_logs(flow_run_id=flow_run_id, limit=page, offset=len(logs))
        logs.extend(batch)
        if len(batch) < page:
            return logs


def _level_name(level: int) -> str:
    import logging

    return logging.getLevelName(level) if level in (10, 20, 30, 40, 50) else f"LEVEL{level}"


@flow_run_app.command("resume")
@friendly_errors
def flow_run_resume(
    id: str = typer.Argument(..., help="The paused flow run's id."),
    run_input: Optional[str] = typer.Option(None, "--input", help="Run input, a JSON object."),
) -> None:
    """Resume a paused or suspended flow run."""
    payload = _json_object(run_input) if run_input is not None else None
    with _client() as client:
        result = client.resume_flow_run(id, run_input=payload)
    if result.status is not SetStateStatus.ACCEPT:
        raise _fail(f"Flow run {id} was not resumed: {result.reason or result.status.value}")
    console.print(f"Resumed flow run {id}.")


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"--input is not valid JSON ({exc}); pass an object like '{{\"x\": 1}}'"
        ) from None
    if not isinstance(value, dict):
        raise ValueError("--input must be a JSON object such as '{\"approved\": true}'")
    return value


# task runs --------------------------------------------------------------------
@task_run_app.command("ls")
@friendly_errors
def task_run_ls(
    flow_run: str = typer.Option(..., "--flow-run", help="The flow run whose task runs to list."),
    limit: int = typer.Option(1000, min=1, max=50_000, help="At most this many task runs."),
    as_json: bool = JsonOption,
) -> None:
    """List a flow run's task runs, oldest first."""
    with _client() as client:
        client.read_flow_run(flow_run)  # a clear "not found" instead of an empty listing
        runs = client.read_task_runs(flow_run_id=flow_run, limit=limit)
    if as_json:
        return _print_json(TypeAdapter(list[TaskRun]), runs)
    table = Table("ID", "Name", "State", "Runs", "Started", "Duration (s)", title="Task runs")
    for run in runs:
        table.add_row(
            str(run.id), run.name, _state_text(run.state_type, run.state_name), str(run.run_count),
            _when(run.start_time), f"{run.total_run_time:.2f}",
        )  # fmt: skip
    console.print(table if runs else "No task runs for this flow run.")


# version ----------------------------------------------------------------------
@app.command("version")
def version(as_json: bool = JsonOption) -> None:
    """Print prefray's version and where it reports to."""
    info = {
        "version": _package_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "api_url": get_current_settings().api_url or "embedded (no PREFRAY_API_URL)",
    }
    if as_json:
        return typer.echo(json.dumps(info, indent=2))
    for key, value in info.items():
        console.print(f"{key + ':':<10} {value}")


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("prefray")
    except PackageNotFoundError:  # a source checkout that is not installed
        return "unknown"


# deploy, deployment, worker and flow-run cancel live in their own module
_register_deployment_commands(sys.modules[__name__])


# concurrency-limit and task-server commands (they register themselves on `app`)
import prefray.cli_concurrency  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
