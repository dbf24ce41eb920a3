"""CLI commands for tag concurrency limits and task servers (registered on `prefray.cli.app`).

prefray concurrency-limit create TAG N
prefray concurrency-limit ls [--json]
prefray concurrency-limit inspect TAG [--json]
prefray concurrency-limit reset TAG
prefray concurrency-limit delete TAG
prefray task-server serve module:task [module:other ...] [--runner concurrent|sequential|ray]
                                      [--limit 10] [--lease-seconds 30]
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import typer
from pydantic import TypeAdapter
from rich.table import Table

from prefray.cli import JsonOption, _client, _print_json, app, console, friendly_errors
from prefray.schemas import ConcurrencyLimit

__all__ = ["concurrency_limit_app", "load_task", "task_server_app"]

concurrency_limit_app = typer.Typer(
    no_args_is_help=True, help="Limit how many task runs with a tag run at once."
)
task_server_app = typer.Typer(
    no_args_is_help=True, help="Run task servers for autonomous task runs."
)
app.add_typer(concurrency_limit_app, name="concurrency-limit")
app.add_typer(task_server_app, name="task-server")


# concurrency limits -------------------------------------------------------------------
@concurrency_limit_app.command("create")
@friendly_errors
def concurrency_limit_create(
    tag: str = typer.Argument(..., help="The tag to limit."),
    limit: int = typer.Argument(..., help="Task runs with this tag allowed to run at once."),
) -> None:
    """Create (or change) the concurrency limit on a tag; 0 makes such runs abort."""
    with _client() as client:
        created = client.create_concurrency_limit(tag, limit)
    console.print(f"Concurrency limit on tag {created.tag!r}: {created.concurrency_limit}.")


@concurrency_limit_app.command("ls")
@friendly_errors
def concurrency_limit_ls(as_json: bool = JsonOption) -> None:
    """List the concurrency limits and how many of their slots are in use."""
    with _client() as client:
        limits = client.read_concurrency_limits()
    if as_json:
        return _print_json(TypeAdapter(list[ConcurrencyLimit]), limits)
    table = Table("Tag", "Limit", "Active", title="Concurrency limits")
    for limit in limits:
        table.add_row(limit.tag, str(limit.concurrency_limit), str(len(limit.active_slots)))
    console.print(table if limits else "No concurrency limits.")


@concurrency_limit_app.command("inspect")
@friendly_errors
def concurrency_limit_inspect(
    tag: str = typer.Argument(..., help="The limited tag."), as_json: bool = JsonOption
) -> None:
    """Show one limit and the task runs holding its slots."""
    with _client() as client:
        limit = client.read_concurrency_limit(tag)
    if as_json:
        return _print_json(TypeAdapter(ConcurrencyLimit), limit)
    console.print(f"Tag {limit.tag!r}: limit {limit.concurrency_limit}, ", end="")
    console.print(f"{len(limit.active_slots)} in use")
    for run_id in limit.active_slots:
        console.print(f"  {run_id}")


@concurrency_limit_app.command("reset")
@friendly_errors
def concurrency_limit_reset(tag: str = typer.Argument(..., help="The limited tag.")) -> None:
    """Free every slot of a tag (slots held by runs whose process died unreported)."""
    with _client() as client:
        client.reset_concurrency_limit(tag)
    console.print(f"Freed every slot of tag {tag!r}.")


@concurrency_limit_app.command("delete")
@friendly_errors
def concurrency_limit_delete(tag: str = typer.Argument(..., help="The limited tag.")) -> None:
    """Remove the concurrency limit on a tag."""
    with _client() as client:
        client.delete_concurrency_limit(tag)
    console.print(f"Deleted the concurrency limit on tag {tag!r}.")


# task servers ------------------------------------------------------------------------
@task_server_app.command("serve")
@friendly_errors
def task_server_serve(
    tasks: list[str] = typer.Argument(..., help="Tasks to serve, as module:task."),
    runner: str = typer.Option("concurrent", help="concurrent, sequential or ray."),
    limit: int = typer.Option(10, min=1, help="Runs in flight at once."),
    lease_seconds: float = typer.Option(30.0, min=0.1, help="Lease on each claimed run."),
    poll_interval: float = typer.Option(0.5, min=0.01, help="Seconds between empty claims."),
) -> None:
    """Claim and run the queued (autonomous) runs of these tasks until interrupted."""
    from prefray.task_server import serve

    loaded = [load_task(spec) for spec in tasks]
    console.print(f"Serving {', '.join(t.name for t in loaded)} (pid {os.getpid()})")
    serve(
        *loaded,
        task_runner=_runner(runner),
        limit=limit,
        lease_seconds=lease_seconds,
        poll_interval=poll_interval,
    )


def load_task(spec: str) -> Any:
    """`module:task` (module importable from the current directory) -> the Task."""
    from prefray.tasks import Task

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{spec!r} is not module:task (e.g. my_tasks:double)")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} for {spec!r}: {exc}") from None
    found = getattr(module, attr, None)
    if not isinstance(found, Task):
        raise ValueError(f"{spec!r} is not a @task (found {type(found).__name__})")
    return found


def _runner(name: str) -> Any:
    import task_runners

    runners = {
        "concurrent": "ConcurrentTaskRunner",
        "sequential": "SequentialTaskRunner",
        "ray": "RayTaskRunner",
    }
    if name not in runners:
        raise ValueError(f"--runner must be one of {', '.join(runners)}, got {name!r}")
    return getattr(task_runners, runners[name])()
