"""The process's Ray connection: joined once, shared, shut down by its owner.

A runner that finds Ray initialised reuses it (a subflow with its own
`RayTaskRunner`, a user who called `ray.init` first, a test fixture). A runner
that calls `ray.init` itself owns the connection: it is shut down when the
last runner using it stops. Runners in concurrent flows share it.

Shutting down a local cluster this process started ends the connection at
once and stops the cluster's processes (raylet, GCS, workers: about a second
of graceful exits, one after another) in a background thread, so the flow's
result does not wait for them; the next `acquire` and the interpreter's exit
wait for that thread.

`check_api_reachable` runs a tiny task on the cluster that asks the API for
`/health`, once per (Ray job, API URL), so a cluster that cannot reach the API
fails at once with an error that says how to fix it, instead of hanging.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from prefray.exceptions import ConfigurationError, TaskRunnerError

__all__ = ["acquire", "check_api_reachable", "release"]

logger = logging.getLogger("prefray.task_runners.ray")

PROBE_HTTP_TIMEOUT = 5.0  # seconds the worker waits for the API
PROBE_TASK_TIMEOUT = 120.0  # seconds for the cluster to run the probe at all (cold workers)

_lock = threading.Lock()
_users = 0
_owned = False  # whether a runner (not the user) called ray.init
_owned_local = False  # ... and that call started a local cluster
_stopping: threading.Thread | None = None  # stops the last owned local cluster's processes
_probed: set[tuple[str, str]] = set()


def acquire(address: str | None, init_kwargs: Mapping[str, Any]) -> None:
    """Make sure this process is connected to Ray; count one more user."""
    global _users, _owned, _owned_local
    import ray

    with _lock:
        if not ray.is_initialized():
            _wait_for_stopped_cluster()
            _init(ray, address, init_kwargs)
            _owned = True
            _owned_local = address is None
            _preload_for_shutdown()
        elif _users == 0:
            _owned = False  # initialised by someone else: never ours to shut down
        _users += 1


def _init(ray: Any, address: str | None, init_kwargs: Mapping[str, Any]) -> None:
    kwargs = dict(init_kwargs)
    if address is not None:
        kwargs["address"] = address
    try:
        try:
            ray.init(**kwargs)
        except ConnectionError:
            if not (address or "").startswith("ray://"):
                raise
            # a busy head sometimes fails to start the per-client server; once more
            logger.warning("Ray Client connection to %s failed; retrying once", address)
            ray.init(**kwargs)
    except Exception as exc:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray cluster"
        raise TaskRunnerError(
            f"RayTaskRunner could not connect to {where}: {type(exc).__name__}: {exc}. "
            "Check the address (None: start a local cluster; 'auto': the cluster started "
            "with `ray start` on this machine; 'ray://host:10001': a remote head)."
        ) from exc
    logger.debug("connected to Ray (%s)", address or "new local cluster")


def release() -> None:
    """One user fewer; the last one shuts down a connection a runner opened."""
    global _users, _owned
    import ray

    with _lock:
        _users = max(0, _users - 1)
        if _users == 0 and _owned:
            _owned = False
            _probed.clear()
            if not (_owned_local and _shutdown_in_background(ray)):
                ray.shutdown()


def _preload_for_shutdown() -> None:
    """`ray.shutdown()` imports Ray's compiled-DAG modules (~0.1 s) on its first
    call: import them now, in the background, while the flow waits on its runs."""

    def preload() -> None:
        try:
            import ray.dag.compiled_dag_node  # noqa: F401
        except Exception as exc:  # shutdown will import (or fail) as it would anyway
            logger.debug("preloading Ray's shutdown imports: %s", exc)

    threading.Thread(target=preload, name="prefray-ray-preload", daemon=True).start()


def _shutdown_in_background(ray: Any) -> bool:
    """Disconnect now; stop the local cluster's processes in a (non-daemon)
    thread. False (nothing done) where this Ray does not expose its node."""
    global _stopping
    worker = getattr(getattr(ray, "_private", None), "worker", None)
    node = getattr(worker, "_global_node", None)
    if node is None or not hasattr(node, "kill_all_processes"):
        return False
    worker._global_node = None  # ray.shutdown() disconnects and leaves the processes
    try:
        ray.shutdown()
    finally:
        _stopping = threading.Thread(
            target=_stop_processes, args=(node,), name="prefray-ray-shutdown"
        )
        _stopping.start()
    return True


def _stop_processes(node: Any) -> None:
    try:
        if node.is_head():
            node.destroy_external_storage()
        node.kill_all_processes(check_alive=False, allow_graceful=True)
    except Exception as exc:  # the processes may be gone already
        logger.debug("stopping the local Ray cluster: %s", exc)


def _wait_for_stopped_cluster() -> None:
    """Before starting Ray again: the previous local cluster is gone."""
    global _stopping
    stopping, _stopping = _stopping, None
    if stopping is not None:
        stopping.join()


def _job_key(ray: Any) -> str:
    try:
        return str(ray.get_runtime_context().get_job_id())
    except Exception:
        return "unknown-job"


def check_api_reachable(url: str | None) -> None:
    """Raise ConfigurationError unless a Ray worker can reach the API at `url`."""
    if not url:
        return  # nothing to check: the engine resolves the embedded API's URL first
    import ray

    key = (_job_key(ray), url)
    if key in _probed:
        return
    from task_runners.ray.worker import remote_probe

    problem = _run_probe(ray, remote_probe(), url)
    if problem is not None:
        raise ConfigurationError(
            f"Ray workers cannot reach the prefray API at {url} ({problem}). Task runs on "
            "this cluster could not record their states and logs, so nothing was submitted. "
            "Run the API where the workers can reach it (`prefray server start --host "
            "0.0.0.0`, with PREFRAY_API_KEY set to protect it) and set PREFRAY_API_URL on "
            "the driver to an address the workers can reach, e.g. "
            "http://<driver-host>:4200/api."
        )
    with _lock:
        _probed.add(key)


def _run_probe(ray: Any, probe: Any, url: str) -> str | None:
    ref = probe.remote(url, PROBE_HTTP_TIMEOUT)
    try:
        return ray.get(ref, timeout=PROBE_TASK_TIMEOUT)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(ref, force=True)
        raise TaskRunnerError(
            f"The Ray cluster did not run a probe task within {PROBE_TASK_TIMEOUT:g} s; "
            "is it out of resources, or are its workers failing to start?"
        ) from None
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", exc)
        if isinstance(cause, ModuleNotFoundError):
            raise TaskRunnerError(
                f"prefray is not importable on the Ray workers ({cause}). Install prefray "
                "in the cluster's Python environment, or ship it with "
                "init_kwargs={'runtime_env': {'py_modules': [...]}}."
            ) from exc
        raise
