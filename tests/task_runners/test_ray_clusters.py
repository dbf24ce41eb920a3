"""RayTaskRunner against clusters of its own: a `ray start --head` reached over
`ray://` (with the user's code shipped by runtime_env), and several nodes
(`ray.cluster_utils.Cluster`) for placement and node loss.

A process holds one Ray connection, so each test drives its flow from a
fresh child process (`run_script`) and reads back one JSON line.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from ray_fixtures import (
    RayHead,
    child_env,
    free_port,
    ray_head,  # noqa: F401 - fixture
    run_script,
    short_temp_dir,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]

USER_MODULE = """
import os
from prefray import task, get_run_logger

@task
def shout(word: str) -> dict:
    get_run_logger().info("shouting %s", word)
    return {"word": word.upper(), "pid": os.getpid()}
"""


def test_ray_client_head_with_runtime_env_working_dir(
    ray_head: RayHead,  # noqa: F811
    tmp_path: Path,
) -> None:
    code_dir = tmp_path / "project"
    code_dir.mkdir()
    (code_dir / "usercode.py").write_text(USER_MODULE)
    out = run_script(
        f"""
        import json, os, sys
        sys.path.insert(0, {str(code_dir)!r})
        import ray
        from prefray import flow
        from prefray.client import get_client
        from task_runners import RayTaskRunner
        from usercode import shout  # pickled by reference: the workers need the module

        runner = RayTaskRunner(
            address={ray_head.client_address!r},
            init_kwargs={{"runtime_env": {{"working_dir": {str(code_dir)!r}}}}},
        )

        @flow(task_runner=runner)
        def remote_flow(words):
            return [f.result() for f in shout.map(words)]

        state = remote_flow(["a", "b", "c"], return_state=True)
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_id=state.state_details.flow_run_id)
            logs = client.read_logs(flow_run_id=state.state_details.flow_run_id)
        print(json.dumps({{
            "result": state.result(),
            "driver_pid": os.getpid(),
            "states": sorted(r.state.type.value for r in runs),
            "logged": sorted(l.message for l in logs if l.message.startswith("shouting")),
            "still_connected": ray.is_initialized(),
        }}))
        """,
        cwd=tmp_path,
        env=child_env(PREFRAY_HOME=str(tmp_path / "home")),
    )
    assert [r["word"] for r in out["result"]] == ["A", "B", "C"]
    assert all(r["pid"] != out["driver_pid"] for r in out["result"])
    assert out["states"] == ["COMPLETED"] * 3
    assert out["logged"] == ["shouting a", "shouting b", "shouting c"]
    assert out["still_connected"] is False  # the runner closed the client connection it opened


def test_probe_over_ray_client_fails_fast_with_unreachable_api(
    ray_head: RayHead,  # noqa: F811
    tmp_path: Path,
) -> None:
    dead_url = f"http://127.0.0.1:{free_port()}/api"
    out = run_script(
        f"""
        import json
        from prefray import flow, task
        from task_runners import RayTaskRunner

        @task
        def never() -> None:
            raise AssertionError("must not run")

        @flow(task_runner=RayTaskRunner(address={ray_head.client_address!r}))
        def unreachable():
            never.submit()

        try:
            unreachable()
            print(json.dumps({{"error": None}}))
        except Exception as exc:
            print(json.dumps({{"error": type(exc).__name__, "message": str(exc)}}))
        """,
        cwd=tmp_path,
        env=child_env(PREFRAY_HOME=str(tmp_path / "home"), PREFRAY_API_URL=dead_url),
    )
    # the flow run itself cannot be recorded at a dead URL: the client says so first;
    # either way nothing hangs and the error names the URL
    assert out["error"] is not None and dead_url.rsplit("/api", 1)[0] in out["message"]


def test_local_cluster_the_runner_started_is_shut_down_after_each_flow(tmp_path: Path) -> None:
    # the connection ends with the flow; the cluster's processes stop in the
    # background, and a second flow starts a fresh cluster once they are gone
    out = run_script(
        f"""
        import json, psutil, ray
        from prefray import flow, task
        from task_runners import RayTaskRunner
        from task_runners.ray import connection

        @task
        def double(x: int) -> int:
            return 2 * x

        runner = RayTaskRunner(init_kwargs={{
            "num_cpus": 1, "include_dashboard": False, "configure_logging": False,
            "_temp_dir": {short_temp_dir("rayo")!r},
        }})

        ray_pids = set()

        def ray_processes() -> list[psutil.Process]:
            found = []
            for p in psutil.Process().children(recursive=True):
                try:
                    if p.status() != psutil.STATUS_ZOMBIE and (
                        p.name() in ("raylet", "gcs_server") or p.name().startswith("ray::")
                        or "/ray/" in " ".join(p.cmdline())  # Ray's Python agents
                    ):
                        found.append(p)
                except psutil.Error:
                    pass
            return found

        @flow(task_runner=runner)
        def doubled(n: int) -> list[int]:
            values = [f.result() for f in double.map(range(n))]
            ray_pids.update(p.pid for p in ray_processes())
            return values

        first = doubled(3)
        connected_after_first = ray.is_initialized()
        second = doubled(2)
        connected_after_second = ray.is_initialized()
        stopping = connection._stopping
        if stopping is not None:
            stopping.join(60)
        print(json.dumps({{"results": [first, second], "connected": [connected_after_first,
                          connected_after_second], "seen": len(ray_pids),
                          "left": [p.name() for p in ray_processes() if p.pid in ray_pids]}}))
        """,
        cwd=tmp_path,
        env=child_env(PREFRAY_HOME=str(tmp_path / "home")),
    )
    assert out["results"] == [[0, 2, 4], [0, 2]]
    assert out["connected"] == [False, False]
    assert out["seen"] >= 2 and out["left"] == []  # raylets, GCSs, workers: all gone


MULTI_NODE = """
import json, os, threading, time
from pathlib import Path
import ray
from ray.cluster_utils import Cluster
from prefray import flow, task
from prefray.client import get_client
from task_runners import RayTaskRunner, remote_options

cluster = Cluster(initialize_head=True, head_node_args={{
    "num_cpus": 1, "gcs_server_port": {port}, "object_store_memory": 100 * 2**20,
    "include_dashboard": False,
}})
special = cluster.add_node(num_cpus=2, resources={{"special": 1}}, object_store_memory=100 * 2**20)
ray.init(address=cluster.address)
cluster.wait_for_nodes()

def node() -> str:
    return ray.get_runtime_context().get_node_id()

@remote_options(resources={{"special": 1}})
@task
def on_special() -> str:
    return node()

@task
def anywhere() -> str:
    return node()

@task
def hangs_on_special(flag: str) -> str:
    Path(flag).write_text("started")
    time.sleep(120)
    return "never"

started = Path({flag!r})

def remove_when_started() -> None:
    while not started.exists():
        time.sleep(0.05)
    cluster.remove_node(special, allow_graceful=False)

@flow(task_runner=RayTaskRunner())
def placement():
    with remote_options(num_cpus=2):
        two = anywhere.submit()  # only the special node has 2 CPUs
    return on_special.submit().result(), two.result()

@flow(task_runner=RayTaskRunner())
def node_loss():
    with remote_options(resources={{"special": 1}}):
        return hangs_on_special.submit(str(started)).wait()

placed = placement()
threading.Thread(target=remove_when_started, daemon=True).start()
t0 = time.monotonic()
state = node_loss(return_state=True)
elapsed = time.monotonic() - t0
with get_client(sync_client=True) as client:
    runs = client.read_task_runs(flow_run_id=state.state_details.flow_run_id)
print(json.dumps({{
    "special_node": special.node_id,
    "placed": placed,
    "flow": state.type.value,
    "task": [(r.state.type.value, r.state.message) for r in runs],
    "elapsed": elapsed,
}}))
ray.shutdown()
cluster.shutdown()
"""


def test_placement_and_node_removal_on_a_multi_node_cluster(tmp_path: Path) -> None:
    code = MULTI_NODE.format(port=free_port(), flag=str(tmp_path / "started"))
    out = run_script(
        textwrap.dedent(code),
        cwd=tmp_path,
        env=child_env(PREFRAY_HOME=str(tmp_path / "home")),
        timeout=280,
    )
    assert out["placed"] == [out["special_node"], out["special_node"]]
    assert out["flow"] in {"CRASHED", "FAILED"}
    [(task_state, message)] = out["task"]
    assert task_state == "CRASHED", out
    assert "Ray could not run this task run" in message
    assert out["elapsed"] < 100
