"""prefray: Prefect-compatible flows and tasks, recorded by an orchestration API,
with task runs distributed on Ray.

>>> from prefray import flow, task
>>> @task
... def double(x: int) -> int:
...     return 2 * x
>>> @flow
... def pipeline(n: int = 3) -> list[int]:
...     return [f.result() for f in double.map(range(n))]
"""

from prefray.client import get_client
from prefray.context import tags
from prefray.engine.pausing import pause_flow_run, resume_flow_run, suspend_flow_run
from prefray.flows import Flow, flow
from prefray.logging import get_run_logger
from prefray.states import State
from prefray.tasks import Task, task
from prefray.utilities.annotations import allow_failure, quote, unmapped

__all__ = [
    "Flow",
    "State",
    "Task",
    "allow_failure",
    "flow",
    "get_client",
    "get_run_logger",
    "pause_flow_run",
    "quote",
    "resume_flow_run",
    "suspend_flow_run",
    "tags",
    "task",
    "unmapped",
]
