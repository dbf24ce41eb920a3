"""The HTTP routes of the orchestration API, one module per resource."""

from prefray.server.api import flow_runs, logs, meta, task_runs

__all__ = ["flow_runs", "logs", "meta", "task_runs"]
