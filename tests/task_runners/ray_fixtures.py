"""Real Ray clusters for the tests: no mocks, free ports, owned processes.

- `ray_local`: one local cluster per test session (`ray.init` in this process,
  4 CPUs, a small object store). `RayTaskRunner()` reuses it, as it reuses any
  Ray already initialised in the process.
- `RayHead`: a `ray start --head --block` on free ports in its own process
  group, stopped by that group (never `ray stop`: other people's Ray runs on
  this machine too). Tests drive it from a child Python process, since a
  process holds one Ray connection at a time.
- Multi-node clusters (`ray.cluster_utils.Cluster`) are built inside child
  processes for the same reason (see `run_script`).

Ray's default port 6379 belongs to Redis here: every port is picked free.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_NUM_CPUS = 4
OBJECT_STORE_BYTES = 800 * 1024 * 1024  # room for the 200 MB data-passing test
HEAD_OBJECT_STORE_BYTES = 200 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def short_temp_dir(prefix: str) -> str:
    # Ray's socket paths must stay under ~107 bytes: keep the root short.
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


_local_started = False


def ensure_local_ray() -> Any:
    """Start the session's local cluster in this process (once); Ray's own exit
    hook shuts it down when the test process ends."""
    global _local_started
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        return ray
    tests_dir = str(Path(__file__).resolve().parent)
    context = ray.init(
        num_cpus=LOCAL_NUM_CPUS,
        include_dashboard=False,
        object_store_memory=OBJECT_STORE_BYTES,
        _temp_dir=short_temp_dir("rayt"),
        configure_logging=False,
        # test modules are imported by pytest from tests/task_runners: make them
        # importable on the workers too (their tasks are pickled by reference)
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([tests_dir, str(REPO_ROOT)])}},
    )
    gcs_port = int(context.address_info["gcs_address"].rsplit(":", 1)[1])
    assert gcs_port != 6379, "Ray took Redis's port 6379"
    _local_started = True
    _warm_workers(ray)
    return ray


def _warm_workers(ray: Any) -> None:
    """Start one worker per CPU and import prefray in each, so tests about
    concurrency do not measure Ray's worker start-up."""

    @ray.remote(num_cpus=1)
    def warm() -> int:
        import task_runners.ray.worker  # noqa: F401

        time.sleep(0.5)
        return os.getpid()

    ray.get([warm.remote() for _ in range(LOCAL_NUM_CPUS)])


def make_ray_runner() -> Any:
    """A fresh `RayTaskRunner` on the session's local cluster (the contract suite's factory)."""
    from task_runners import RayTaskRunner

    ensure_local_ray()
    return RayTaskRunner()


@pytest.fixture(scope="session")
def ray_local() -> Iterator[Any]:
    """The local Ray cluster in this process, for the whole session."""
    yield ensure_local_ray()


class RayHead:
    """A `ray start --head --block` process group on free ports."""

    def __init__(self, num_cpus: int = 2, resources: dict[str, float] | None = None):
        self.gcs_port = free_port()
        self.client_port = free_port()
        self.temp_dir = short_temp_dir("rayh")
        cmd = [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--head",
            "--block",
            f"--port={self.gcs_port}",
            f"--ray-client-server-port={self.client_port}",
            "--include-dashboard=false",
            f"--num-cpus={num_cpus}",
            f"--object-store-memory={HEAD_OBJECT_STORE_BYTES}",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
        ]
        if resources:
            cmd.append(f"--resources={json.dumps(resources)}")
        self.log = open(Path(self.temp_dir) / "head.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, start_new_session=True, stdout=self.log, stderr=subprocess.STDOUT
        )

    @property
    def client_address(self) -> str:
        return f"ray://127.0.0.1:{self.client_port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray head exited early; see {self.log.name}")
            try:
                socket.create_connection(("127.0.0.1", self.client_port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"ray head not ready in {timeout}s; see {self.log.name}")

    def stop(self) -> None:
        """Stop the head by its own process group: SIGTERM, then SIGKILL."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        try:  # the group may outlive its leader (gcs_server, raylet, workers)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    head = RayHead()
    try:
        head.wait_ready()
        yield head
    finally:
        head.stop()


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child driver: this repo importable, Ray's token
    auth sent by Ray Client (Ray >= 2.59 enables it for clusters it starts)."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.setdefault("RAY_AUTH_MODE", "token")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def run_script(
    code: str, *, cwd: Path, timeout: float = 180.0, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run `code` in a fresh Python process; it must print one JSON line last."""
    script = cwd / "driver_script.py"
    script.write_text(textwrap.dedent(code))
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,
        env=env or child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise AssertionError(
            f"child driver failed (rc={proc.returncode})\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return json.loads(lines[-1])
