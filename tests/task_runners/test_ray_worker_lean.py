"""The Ray worker's `execute`, in this process (no cluster): a plain run (the
engine's straight path, the worker's templated TaskRun and completed-run
encoding) comes back as the general steps bring it back."""

from __future__ import annotations

import uuid
from typing import Any

from prefray import task
from prefray.engine.call import TaskRunCall
from prefray.schemas import TaskRun
from prefray.settings import get_current_settings
from task_runners.ray import worker
from task_runners.ray.futures import RayState
from task_runners.ray.payload import (
    NotCompleted,
    decode_result,
    encode_result,
    encode_spec,
    small_value,
)
from task_runners.ray.submission import _pickled_payload


@task(retries=1)
def double(x: int) -> int:
    return 2 * x


# the same function, made non-plain: the engine takes its general steps
general_double = double.with_options(log_prints=True)


def _execute(t: Any, x: Any) -> tuple[uuid.UUID, TaskRun, list[Any], Any]:
    flow_run_id = uuid.uuid4()
    task_run = TaskRun(
        id=uuid.uuid4(), name="double-0", flow_run_id=flow_run_id, task_key="k", dynamic_key="0"
    )
    call = TaskRunCall(
        task=t,
        task_run=task_run,
        parameters={"x": x},
        settings=get_current_settings(),
        flow_run_id=flow_run_id,
        flow_name="f",
    )
    spec = encode_spec(task_run, {"x": x}, None, [], 0, 0)
    result, value = worker.execute([uuid.uuid4().hex, _pickled_payload(call), spec])
    return task_run.id, task_run, result, value


def _shape(result: list[Any], run_id: uuid.UUID) -> list[Any]:
    final, reports, value = decode_result(result, RayState, run_id)
    return [
        [(r[0], r[1].type, r[1].name, r[1].message, r[2]) for r in reports],
        (final.type, final.name, final.message, final.data),
        value,
        result[1],  # None: the final state is the last report's
    ]


def test_a_plain_run_comes_back_as_the_general_steps_bring_it() -> None:
    lean_id, _, lean, lean_value = _execute(double, 21)
    general_id, _, general, general_value = _execute(general_double, 21)
    assert lean_value == general_value == 42
    lean_shape, general_shape = _shape(lean, lean_id), _shape(general, general_id)
    assert lean_shape == [
        [(lean_id, "RUNNING", "Running", None, False)]
        + [(lean_id, "COMPLETED", "Completed", None, False)],
        ("COMPLETED", "Completed", None, None),
        [42],
        None,
    ]
    assert general_shape == [
        [(general_id, *r[1:]) for r in lean_shape[0]],
        *lean_shape[1:],
    ]
    assert [r[0] for r in lean[0]] == [None, None]  # the run's own id never travels


def test_a_value_that_does_not_ride_along_stays_in_the_store() -> None:
    run_id, _, result, value = _execute(double, [1, 2])
    assert value == [1, 2, 1, 2] and result[3] is None
    assert _shape(result, run_id)[1][0] == "COMPLETED"


def test_a_failed_run_comes_back_not_completed() -> None:
    run_id, _, result, value = _execute(double.with_options(retries=0), None)  # 2 * None raises
    final, reports, _ = decode_result(result, RayState, run_id)
    assert isinstance(value, NotCompleted) and value.state.type == "FAILED"
    assert final.type == "FAILED" and isinstance(final.exception, TypeError)
    assert final.exception.__cause__ is not None  # the worker's traceback
    assert [(r[0], r[1].type) for r in reports] == [(run_id, "RUNNING"), (run_id, "FAILED")]


def test_split_result_of_a_completed_run_is_encode_result() -> None:
    from prefray.states import Completed, Running

    run_id = uuid.uuid4()
    running, completed = Running(), Completed()
    final = completed._shallow_copy().with_value(5)
    reports = [(run_id, running, False), (run_id, completed, False)]
    result, value = worker._split_result(final, reports, run_id)
    assert value == 5
    assert result == encode_result(final, reports, None, small_value(5), run_id)
