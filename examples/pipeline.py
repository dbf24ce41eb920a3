"""The README's main example: a mapped flow whose task runs execute on Ray.

Run it with `python examples/pipeline.py`. With no PREFRAY_API_URL set, the
flow starts the orchestration API itself (on SQLite under PREFRAY_HOME) and
Ray starts a local cluster; every flow run, task run, state and log is
recorded and can be inspected afterwards with the CLI.
"""

from prefray import flow, get_run_logger, task, unmapped
from prefray.settings import get_current_settings
from task_runners import RayTaskRunner


@task(retries=2, retry_delay_seconds=1)
def score(x: int, weight: float) -> float:
    get_run_logger().info("scoring %s", x)
    return x * weight


@flow(task_runner=RayTaskRunner())  # or RayTaskRunner(address="ray://head:10001")
def pipeline(n: int = 1000) -> float:
    futures = score.map(range(n), weight=unmapped(0.5))
    return sum(f.result() for f in futures)


if __name__ == "__main__":
    state = pipeline(n=100, return_state=True)
    flow_run_id = state.state_details.flow_run_id
    print(f"result: {state.result()}")
    settings = get_current_settings()
    print(f"recorded by the API at {settings.api_url} (database: {settings.database_url})")
    print(f"flow run {flow_run_id}: see `prefray flow-run inspect {flow_run_id}`")
