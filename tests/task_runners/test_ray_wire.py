"""The Ray runner's own encodings and handles, without a cluster: what a worker
rebuilds from a spec is what validation builds, what travels back decodes to
the same reports, and `RayFuture` waits as a future must."""

from __future__ import annotations

import pickle
import threading
import time
import uuid
from typing import Any

import pytest

from prefray import task
from prefray.schemas import EmpiricalPolicy, TaskRun, TaskRunInput
from prefray.states import Completed, Running
from task_runners.ray.futures import RayFuture, RayState
from task_runners.ray.payload import (
    Shared,
    decode_result,
    decode_spec,
    encode_completed,
    encode_result,
    encode_spec,
    with_run_template,
)


@task(retries=2, retry_delay_seconds=3)
def retried(x: int) -> int:
    return x


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"tags": ["a", "b"], "run_count": 2},
        {
            "task_inputs": {
                "x": [TaskRunInput(input_type="task_run", id=uuid.uuid4())],
                "y": [TaskRunInput(input_type="parameter", id=None)],
            }
        },
    ],
)
def test_decoded_task_run_is_what_validation_builds(fields: dict[str, Any]) -> None:
    flow_run_id = uuid.uuid4()
    sent = TaskRun(
        id=uuid.uuid4(),
        name="retried-3",
        flow_run_id=flow_run_id,
        task_key="k",
        dynamic_key="3",
        empirical_policy=retried.empirical_policy,
        **fields,
    )
    shared = Shared(retried, None, flow_run_id, "f", False)
    spec = encode_spec(sent, {"x": 3}, None, [], 3, sent.run_count)
    decoded, *rest = decode_spec(spec, shared)
    validated = TaskRun(
        id=sent.id,
        name=sent.name,
        flow_run_id=flow_run_id,
        task_key="k",
        dynamic_key="3",
        tags=sent.tags,
        task_inputs=sent.task_inputs,
        empirical_policy=retried.empirical_policy,
        run_count=sent.run_count,
    )
    assert decoded == validated == sent
    assert decoded.model_fields_set == validated.model_fields_set
    assert decoded.__pydantic_private__ == validated.__pydantic_private__
    assert decoded.__pydantic_extra__ == validated.__pydantic_extra__
    assert decoded.empirical_policy.retries == 2
    assert rest == [{"x": 3}, None, [], 3]


@pytest.mark.parametrize("fields", [{}, {"tags": ["a"], "run_count": 1}])
def test_a_run_template_decodes_what_construct_decodes(fields: dict[str, Any]) -> None:
    flow_run_id, upstream = uuid.uuid4(), uuid.uuid4()
    inputs = {"x": [TaskRunInput(input_type="task_run", id=upstream)]}
    sent = TaskRun(
        id=uuid.uuid4(),
        name="retried-5",
        flow_run_id=flow_run_id,
        task_key="k",
        dynamic_key="5",
        empirical_policy=retried.empirical_policy,
        task_inputs=inputs,
        **fields,
    )
    shared = Shared(retried, None, flow_run_id, "f", False)
    templated = with_run_template(shared)
    assert templated.run_template is not None and templated == shared
    spec = encode_spec(sent, {"x": 5}, [1], [upstream], 5, sent.run_count)
    plain, *rest = decode_spec(spec, shared)
    fast, *fast_rest = decode_spec(spec, templated)
    assert fast_rest == rest == [{"x": 5}, [1], [upstream], 5]
    assert fast == plain == sent
    assert list(fast.__dict__) == list(plain.__dict__)  # the same field order
    assert fast.model_fields_set == plain.model_fields_set
    assert fast.__pydantic_private__ is plain.__pydantic_private__ is None
    assert fast.__pydantic_extra__ is plain.__pydantic_extra__ is None
    assert fast.empirical_policy is retried.empirical_policy
    # each run its own dicts and lists: nothing shared through the template
    other, *_ = decode_spec(spec, templated)
    assert other.__dict__ is not fast.__dict__
    assert other.model_fields_set is not fast.model_fields_set


def test_a_task_without_policy_gets_no_run_template() -> None:
    shared = Shared(object(), None, None, None, False)
    assert with_run_template(shared) is shared


def test_decoded_task_run_of_a_task_without_policy_gets_the_default() -> None:
    sent = TaskRun(id=uuid.uuid4(), name="n", task_key="k", dynamic_key="0")
    shared = Shared(object(), None, None, None, False)
    decoded, *_ = decode_spec(encode_spec(sent, {}, None, [], None, 0), shared)
    assert decoded == sent and decoded.empirical_policy == EmpiricalPolicy()


def test_a_runs_own_reports_travel_without_its_id() -> None:
    run_id, other = uuid.uuid4(), uuid.uuid4()
    running, completed = Running(), Completed()
    items = [(run_id, running, False), (other, Running(), True), (run_id, completed, False)]
    result = encode_result(completed, items, None, [3], run_id)
    assert [r[0] for r in result[0]] == [None, other.bytes, None]
    final, reports, value = decode_result(result, RayState, run_id)
    assert [(r[0], r[1].id, r[2]) for r in reports] == [
        (run_id, running.id, False),
        (other, items[1][1].id, True),
        (run_id, completed.id, False),
    ]
    assert reports[0][0] is run_id and reports[2][1] is final and value == [3]
    # the same reports as when every id travels
    _, with_ids, _ = decode_result(encode_result(completed, items, None, [3]), RayState)
    assert [(r[0], r[1].model_dump(), r[2]) for r in with_ids] == [
        (r[0], r[1].model_dump(), r[2]) for r in reports
    ]
    with pytest.raises(ValueError, match="not known"):
        decode_result(result, RayState)


def test_ray_future_waits_times_out_and_wakes_every_waiter() -> None:
    future = RayFuture(uuid.uuid4(), "n")
    assert future.wait_state(0) is None and future.wait_state(-1) is None
    start = time.monotonic()
    assert future.wait_state(0.2) is None
    assert time.monotonic() - start >= 0.19
    assert not future.is_final() and not future.done()

    seen: list[Any] = []
    waiters = [threading.Thread(target=lambda: seen.append(future.wait_state())) for _ in range(4)]
    waiters.append(threading.Thread(target=lambda: seen.append(future.wait_state(30))))
    for waiter in waiters:
        waiter.start()
    called: list[Any] = []
    future._add_done_callback(called.append)
    time.sleep(0.1)
    state = Completed().with_value(7)
    future.set_final(state)
    for waiter in waiters:
        waiter.join(5)
    assert seen == [state] * 5 and called == [future]
    assert future.is_final() and future.wait_state(0) is state
    assert future.result() == 7

    future._add_done_callback(called.append)  # done: called at once
    assert called == [future, future]
    copy = pickle.loads(pickle.dumps(future))
    assert copy.is_final() and copy.wait_state(0).id == state.id
    assert copy.wait_state(1e12).id == state.id  # any timeout, done at once


@pytest.mark.parametrize("value", [3, "s", [1, 2], 2**70])
def test_encode_completed_is_encode_result(value: Any) -> None:
    run_id, other = uuid.uuid4(), uuid.uuid4()
    running, completed = Running(), Completed()
    final = completed._shallow_copy().with_value(value)
    plain = [(run_id, running, False), (run_id, completed, False)]
    changed = completed.model_copy(update={"message": "m"})
    for reports, last in [
        (plain, final),
        ([(run_id, running, False), (other, completed, True)], final),  # another run's
        ([(run_id, running, False)], final),  # one report
        (plain, changed),  # a final state that differs from the reported one
        ([*plain, (run_id, Completed(), False)], final),
    ]:
        small = [value] if type(value) is not list and value != 2**70 else None
        expected = encode_result(last, reports, None, small, run_id)
        assert encode_completed(last, reports, run_id, value) == expected
    assert encode_completed(final, plain, run_id, value)[1] is None  # the last report's
