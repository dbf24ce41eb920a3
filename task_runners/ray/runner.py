"""`RayTaskRunner`: each task run of a flow executes on a Ray worker.

>>> @flow(task_runner=RayTaskRunner())                      # a local cluster
>>> @flow(task_runner=RayTaskRunner(address="auto"))        # `ray start` on this machine
>>> @flow(task_runner=RayTaskRunner(address="ray://head:10001",
...                                 init_kwargs={"runtime_env": {"working_dir": "."}}))

The flow engine stays on the driver. Each task run becomes one Ray task
(`task_runners.ray.worker.execute`, wrapped with `ray.remote` once) that runs
the engine's task-run entry point on a worker; the worker's state transitions
come back with its small result and the driver ships them to the API in
batches; the value stays in Ray's object store. See docs/ray.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefray.engine.call import TaskRunCall
from prefray.futures import PrefrayFuture
from task_runners.base import BaseTaskRunner
from task_runners.ray import connection
from task_runners.ray.futures import RayFuture
from task_runners.ray.options import check_options

__all__ = ["RayTaskRunner"]

CLOSE_TIMEOUT = 30.0  # seconds to let cancelled or late runs settle when a flow ends


class RayTaskRunner(BaseTaskRunner):
    """Runs task runs on Ray: a local cluster, the one on this machine, or a remote head.

    - `address`: None starts a local cluster (`ray.init(**init_kwargs)`);
      `"auto"` joins the cluster started with `ray start` on this machine;
      `"ray://host:10001"` connects through Ray Client. A Ray already
      initialised in this process is reused whatever the address, and only a
      connection this runner opened is shut down (when the last runner using
      it stops).
    - `init_kwargs`: passed to `ray.init` unchanged (e.g. `num_cpus`,
      `runtime_env={"working_dir": "."}` to ship your code to a remote cluster).
    - `remote_options`: default Ray options for every task run (`num_cpus`,
      `num_gpus`, `memory`, `resources`, `runtime_env`,
      `scheduling_strategy`...); see `task_runners.remote_options` for
      per-task and per-call-site options.
    """

    def __init__(
        self,
        address: str | None = None,
        init_kwargs: Mapping[str, Any] | None = None,
        remote_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if address is not None and not isinstance(address, str):
            raise TypeError(
                f"address must be a string such as 'ray://host:10001', not {address!r}."
            )
        if init_kwargs is not None and not isinstance(init_kwargs, Mapping):
            raise TypeError(
                f"init_kwargs must be a mapping of ray.init arguments, not {init_kwargs!r}."
            )
        if init_kwargs and "address" in init_kwargs:
            raise ValueError("Pass the address as RayTaskRunner(address=...), not in init_kwargs.")
        self.address = address
        self.init_kwargs = dict(init_kwargs or {})
        self.remote_options = check_options(
            remote_options or {}, "RayTaskRunner(remote_options=...)"
        )
        self._monitor: Any = None
        # API URLs the workers were found to reach while this runner holds its
        # connection (the probe's own cache asks Ray for the job id every time)
        self._reachable: set[str] = set()

    def _config(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "init_kwargs": self.init_kwargs,
            "remote_options": self.remote_options,
        }

    # lifecycle ---------------------------------------------------------------------
    def _start(self) -> None:
        from task_runners.ray.monitor import Monitor
        from task_runners.ray.submission import Submitter

        connection.acquire(self.address, self.init_kwargs)
        self._reachable = set()
        self._monitor = Monitor(Submitter(self.remote_options))

    def _stop(self) -> None:
        monitor, self._monitor = self._monitor, None
        try:
            if monitor is not None:
                monitor.close(CLOSE_TIMEOUT)
                monitor.submitter.clear()
                _flush_driver_reports()  # what the monitor settled last is on the server
        finally:
            connection.release()

    # work --------------------------------------------------------------------------
    def submit(self, call: TaskRunCall) -> PrefrayFuture:
        self._check_started()
        url = call.settings.api_url
        if url not in self._reachable:
            connection.check_api_reachable(url)
            self._reachable.add(url)
        future = RayFuture(call.task_run.id, call.task_run.name)
        monitor = self._monitor
        try:
            monitor.start(monitor.submitter.plan(call, future))
        except Exception as exc:
            _record_refusal(call, exc)
            raise
        return future

    def cancel_all(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel_all()


def _flush_driver_reports() -> None:
    from prefray.engine.reporting import get_state_reporter
    from prefray.settings import get_current_settings

    reporter = get_state_reporter()
    if reporter.pending():
        reporter.close(get_current_settings().log_flush_timeout)


def _record_refusal(call: TaskRunCall, exc: Exception) -> None:
    """A run that could not be submitted ends Failed in the API, with the reason."""
    from prefray.engine.reporting import get_state_reporter
    from prefray.settings import use_settings
    from prefray.states import Failed

    state = Failed(message=str(exc))
    state.state_details.retriable = False
    with use_settings(call.settings):
        get_state_reporter().report(call.task_run.id, state)
