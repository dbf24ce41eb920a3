"""Flow.to_deployment, run_deployment and the client's create_flow_run_from_deployment."""

from __future__ import annotations

from typing import Any

import pytest

from prefray import flow
from prefray.deployments import run_deployment
from prefray.exceptions import ObjectNotFound
from prefray.states import StateType


@flow
def nightly(day: str = "today", n: int = 1) -> str:
    return f"{day}:{n}"


def test_to_deployment_registers_entrypoint_and_defaults(client: Any) -> None:
    deployment = nightly.to_deployment("every-night", parameters={"n": 3}).apply()
    assert deployment.entrypoint.endswith("test_run_deployment.py:nightly")
    assert deployment.parameters == {"n": 3}
    assert deployment.parameter_openapi_schema["properties"]["n"]["type"] == "integer"
    run = client.create_flow_run_from_deployment(deployment.id, parameters={"day": "mon"})
    assert run.state_type == StateType.SCHEDULED and run.parameters == {"n": 3, "day": "mon"}
    with pytest.raises(ValueError, match="takes no parameter"):
        nightly.to_deployment("bad", parameters={"nope": 1})


def test_run_deployment_inside_a_flow_is_linked_as_a_subflow(client: Any) -> None:
    nightly.to_deployment("linked").apply()

    @flow
    def parent() -> Any:
        return run_deployment("nightly/linked", parameters={"n": 9}, timeout=0)

    state = parent(return_state=True)
    child = state.result()
    assert child.state_type == StateType.SCHEDULED and child.parameters["n"] == 9
    link = client.read_task_run(child.parent_task_run_id)
    assert link.flow_run_id == state.state_details.flow_run_id
    assert link.name.startswith("nightly/linked")


def test_run_deployment_waits_up_to_its_timeout(client: Any) -> None:
    deployment = nightly.to_deployment("unattended").apply()
    run = run_deployment(deployment.id, timeout=0.3, poll_interval=0.1, as_subflow=False)
    assert run.state_type == StateType.SCHEDULED  # no worker ran it


def test_unknown_deployment_names_are_clear(client: Any) -> None:
    with pytest.raises(ObjectNotFound, match="prefray deploy"):
        run_deployment("nightly/nope", timeout=0)
    with pytest.raises(ValueError, match="FLOW_NAME/DEPLOYMENT_NAME"):
        run_deployment("no-slash", timeout=0)
