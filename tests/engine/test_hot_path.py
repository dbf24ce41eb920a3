"""The engine's fast paths build exactly what the slow ones did: states without
validation, task-run creations without model_construct, plain-signature binding,
pooled UUIDs, and the collector thresholds a flow run raises and restores."""

from __future__ import annotations

import gc
import inspect
import os
import pickle
import threading
import uuid
from typing import Any

import pytest
from pydantic import PrivateAttr

from prefray import flow, task
from prefray.engine.collector import FLOW_RUN_THRESHOLD, fewer_collections
from prefray.exceptions import ParameterBindError
from prefray.schemas import EmpiricalPolicy, TaskRun, TaskRunCreate
from prefray.states import (
    Completed,
    Failed,
    Pending,
    Retrying,
    Running,
    State,
    StateDetails,
    StateType,
    build_valid_state,
    now,
)
from prefray.utilities.callables import get_call_parameters, parameters_to_args_kwargs
from prefray.utilities.ids import uuid4
from prefray.utilities.models import construct, copy_with


def _validated(state_type: StateType, **kwargs: Any) -> State:
    kwargs.setdefault("name", None)
    return State(type=state_type, state_details=StateDetails(), **kwargs)


@pytest.mark.parametrize(
    ("quick", "slow"),
    [
        (Running, lambda: _validated(StateType.RUNNING)),
        (Retrying, lambda: _validated(StateType.RUNNING, name="Retrying")),
        (lambda: Retrying(name=None), lambda: _validated(StateType.RUNNING, name=None)),
        (lambda: Failed(message="m"), lambda: _validated(StateType.FAILED, message="m")),
        (
            lambda: Pending(name="NotReady", message="x"),
            lambda: _validated(StateType.PENDING, name="NotReady", message="x"),
        ),
    ],
)
def test_quick_states_equal_validated_ones(quick: Any, slow: Any) -> None:
    a, b = quick(), slow()
    volatile = {"id", "timestamp"}
    assert a.model_dump(exclude=volatile) == b.model_dump(exclude=volatile)
    assert a.model_dump_json(exclude=volatile) == b.model_dump_json(exclude=volatile)
    assert a.model_fields_set == b.model_fields_set
    assert a.state_details.model_fields_set == b.state_details.model_fields_set
    assert a.__pydantic_private__ == b.__pydantic_private__
    assert list(a.__dict__) == list(b.__dict__)
    assert a.id != quick().id and a.id.version == 4
    assert pickle.loads(pickle.dumps(a)) == a


def test_quick_states_do_not_share_details_and_bad_input_still_fails() -> None:
    a, b = Completed(), Completed()
    a.state_details.cache_key = "k"
    assert b.state_details.cache_key is None
    assert a.state_details.model_fields_set == {"cache_key"}
    with pytest.raises(ValueError):
        Failed(message=3)  # validated path: a clear error


class _SubState(State):
    _extra: Any = PrivateAttr(default=None)
    _flag: bool = PrivateAttr(default=True)


@pytest.mark.parametrize("cls", [State, _SubState])
@pytest.mark.parametrize("message", [None, "m"])
def test_build_valid_state_equals_validated_construction(cls: type[State], message: Any) -> None:
    state_id, timestamp = uuid4(), now()
    fields = frozenset(State.model_fields)
    built = build_valid_state(cls, state_id, StateType.FAILED, "Failed", message, timestamp, fields)
    validated = cls(
        id=state_id,
        type=StateType.FAILED,
        name="Failed",
        message=message,
        timestamp=timestamp,
        state_details=StateDetails(),
        data=None,
    )
    assert type(built) is cls
    assert built == validated
    assert built.__dict__ == validated.__dict__ and list(built.__dict__) == list(validated.__dict__)
    assert built.model_fields_set == validated.model_fields_set
    assert built.state_details.__dict__ == validated.state_details.__dict__
    assert built.state_details.model_fields_set == validated.state_details.model_fields_set
    assert built.__pydantic_private__ == validated.__pydantic_private__
    assert built.__pydantic_extra__ == validated.__pydantic_extra__
    assert built.model_dump_json() == validated.model_dump_json()
    again = build_valid_state(cls, uuid4(), StateType.FAILED, "Failed", None, timestamp, fields)
    # nothing mutable is shared between two built states
    assert again.__pydantic_private__ is not built.__pydantic_private__
    assert again.model_fields_set is not built.model_fields_set
    assert again.state_details is not built.state_details
    assert again.state_details.__dict__ is not built.state_details.__dict__
    built.with_value(1)
    built.state_details.cache_key = "k"
    assert not again.has_value and again.state_details.cache_key is None
    assert pickle.loads(pickle.dumps(built)) == built


def test_a_shallow_copy_keeps_fields_and_payload_but_owns_its_dicts() -> None:
    state = Completed().with_value([1])
    copy = state._shallow_copy()
    assert copy == state and copy.has_value and copy._value is state._value
    assert copy.state_details is state.state_details  # shared, as documented
    copy.with_value(2)
    assert state._value == [1]


def test_construct_matches_model_construct() -> None:
    values = dict(
        id=uuid.uuid4(),
        name="t-1",
        flow_run_id=uuid.uuid4(),
        task_key="k",
        dynamic_key="1",
        tags=[],
        task_inputs={},
        empirical_policy=EmpiricalPolicy(),
        state=None,
    )
    for cls in (TaskRunCreate, TaskRun):
        a, b = cls.model_construct(**values), construct(cls, **values)
        assert a.__dict__ == b.__dict__ and list(a.__dict__) == list(b.__dict__)
        assert a.model_fields_set == b.model_fields_set
        assert a.model_dump_json() == b.model_dump_json()
    short = dict(id=uuid.uuid4(), name="t", task_key="k", dynamic_key="1")
    a, b = construct(TaskRun, **short), construct(TaskRun, **short)
    assert a.tags == [] and a.tags is not b.tags  # mutable defaults: one per instance
    assert a.model_fields_set == set(short)


def test_copy_with_matches_model_copy_with_update() -> None:
    states = [Running(), Completed()]
    create = TaskRunCreate(id=uuid.uuid4(), name="t-1", task_key="k", dynamic_key="1")
    for model, update in [
        (create, {"states": states}),
        (Completed().with_value(3), {"name": "Cached", "message": "m"}),
        (StateDetails(cache_key="c"), {"transition_id": uuid.uuid4()}),
    ]:
        a, b = model.model_copy(update=update), copy_with(model, update)
        assert type(a) is type(b)
        assert a.__dict__ == b.__dict__ and list(a.__dict__) == list(b.__dict__)
        assert a.model_fields_set == b.model_fields_set
        assert a.__pydantic_extra__ == b.__pydantic_extra__
        assert a.__pydantic_private__ == b.__pydantic_private__
        assert b.__dict__ is not model.__dict__
        assert b.model_fields_set is not model.model_fields_set
    assert create.states is None  # the original is left as it was


def _bound(fn: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _plain(a: int, b: int = 2, c: Any = None) -> None: ...


def _mixed(a: int, /, b: int, *c: int, d: int = 1, **e: int) -> None: ...


@pytest.mark.parametrize(
    ("fn", "args", "kwargs"),
    [
        (_plain, (1,), {}),
        (_plain, (1, 5, 6), {}),
        (_plain, (1,), {"c": 3}),
        (_plain, (), {"c": 3, "a": 1}),
        (_mixed, (1, 2, 3), {"z": 1}),
    ],
)
def test_binding_matches_signature_bind(fn: Any, args: tuple, kwargs: dict) -> None:
    got = get_call_parameters(fn, args, kwargs)
    assert got == _bound(fn, args, kwargs) and list(got) == list(_bound(fn, args, kwargs))
    if fn is _plain:  # every parameter goes back by name
        assert parameters_to_args_kwargs(fn, got) == ((), got)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "missing a required argument"),
        ((1,), {"a": 2}, "multiple values"),
        ((1,), {"zz": 1}, "unexpected keyword"),
        ((1, 2, 3, 4), {}, "too many positional"),
    ],
)
def test_binding_errors_unchanged(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(ParameterBindError, match=message):
        get_call_parameters(_plain, args, kwargs)


def test_pooled_uuids_are_unique_v4_across_threads_and_fork() -> None:
    made: list[uuid.UUID] = []

    def take() -> None:
        made.extend(uuid4() for _ in range(5_000))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == len(made) == 20_000
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 for u in made)
    assert uuid.UUID(str(made[0])) == made[0]
    if not hasattr(os, "fork"):
        return
    uuid4()  # the parent's block is in use
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, uuid4().bytes)
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 16) != uuid4().bytes  # the child drew fresh random bytes


def test_fewer_collections_nests_and_restores() -> None:
    before = gc.get_threshold()
    with fewer_collections():
        assert gc.get_threshold()[0] == max(before[0], FLOW_RUN_THRESHOLD)
        with fewer_collections():
            assert gc.get_threshold()[0] == max(before[0], FLOW_RUN_THRESHOLD)
        assert gc.get_threshold()[0] == max(before[0], FLOW_RUN_THRESHOLD)
    assert gc.get_threshold() == before


def test_fewer_collections_keeps_a_change_made_meanwhile() -> None:
    before = gc.get_threshold()
    try:
        with fewer_collections():
            gc.set_threshold(123, 4, 5)
        assert gc.get_threshold() == (123, 4, 5)
    finally:
        gc.set_threshold(*before)


@pytest.mark.usefixtures("api")
def test_a_flow_run_raises_the_threshold_while_it_runs() -> None:
    before = gc.get_threshold()
    seen: list[int] = []

    @task
    def look() -> int:
        return gc.get_threshold()[0]

    @flow
    def watched() -> None:
        seen.append(look())

    watched()
    assert seen == [max(before[0], FLOW_RUN_THRESHOLD)]
    assert gc.get_threshold() == before


@pytest.mark.usefixtures("api")
def test_a_submitted_run_waiting_for_a_pool_thread_is_created_with_its_first_report() -> None:
    # the creation is held until the run starts (then both travel as one item),
    # unless the run waits on an upstream: that one is sent at once (Pending, inputs)
    from prefray.client import get_client
    from prefray.engine.reporting import get_state_reporter
    from task_runners import ConcurrentTaskRunner

    release = threading.Event()
    held: dict[str, bool] = {}

    @task
    def blocker() -> int:
        release.wait(10)
        return 1

    @task
    def quick(x: int) -> int:
        return x + 1

    @flow(task_runner=ConcurrentTaskRunner(max_workers=1))
    def queued() -> list[int]:
        first = blocker.submit()
        waiting = quick.submit(1)  # behind the blocker on the only thread
        downstream = quick.submit(first)
        deferred = get_state_reporter()._deferred
        held["waiting"] = waiting.task_run_id in deferred
        held["downstream"] = downstream.task_run_id in deferred
        release.set()
        return [f.result() for f in (first, waiting, downstream)]

    state = queued(return_state=True)
    assert state.result() == [1, 2, 2]
    assert held == {"waiting": True, "downstream": False}
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_id=state.state_details.flow_run_id)
    assert sorted(r.state_type.value for r in runs) == ["COMPLETED"] * 3


def test_a_transition_id_is_set_once_as_pydantic_sets_a_field() -> None:
    from prefray.engine.reporting import _with_transition_id

    state = Running()
    _with_transition_id(state)
    details = state.state_details
    first = details.transition_id
    assert first is not None and first.version == 4
    _with_transition_id(state)
    assert details.transition_id is first  # a replay keeps its id
    other = StateDetails()
    other.transition_id = first
    assert other == details and other.model_fields_set == details.model_fields_set
    assert other.model_dump_json() == details.model_dump_json()


def test_held_value_is_what_with_value_attached() -> None:
    state = Completed()
    assert state.held_value is None and not state.has_value
    assert state.with_value(0).held_value == 0 == state._value and state.has_value
    copy = pickle.loads(pickle.dumps(state))
    assert copy.held_value == 0
    bare = State.model_construct(type=StateType.COMPLETED)  # no private dict at all
    assert bare.held_value is None
