"""Flow files the tests copy into a temporary directory and run in fresh processes."""

SIMPLE = """
import os
from prefray import flow, task

@task
def double(x: int) -> int:
    return 2 * x

@flow
def greet(name: str = "world", n: int = 1) -> str:
    value = double(n)
    with open(os.environ["OUT_FILE"], "a") as fh:
        fh.write(f"{name}:{value}\\n")
    return f"hello {name} {value}"
"""

SUSPENDING = """
import os
from prefray import flow, task, suspend_flow_run

def record(line):
    with open(os.environ["COUNT_FILE"], "a") as fh:
        fh.write(line + "\\n")

@task
def fetch(i: int) -> int:
    record(f"fetch-{i}")
    return i * 10

@task
def combine(values, factor: int) -> int:
    record("combine")
    return sum(values) * factor

@flow
def suspending(n: int = 3) -> int:
    values = [f.result() for f in fetch.map(range(n))]
    factor = suspend_flow_run(wait_for_input=int, timeout=120)
    return combine(values, factor)
"""

SLOW = """
import os, time
from prefray import flow, task

@task
def sleepy(seconds: float) -> float:
    with open(os.environ["OUT_FILE"], "a") as fh:
        fh.write(f"started {os.getpid()}\\n")
    time.sleep(seconds)
    return seconds

@flow
def slow(seconds: float = 60) -> float:
    return sleepy(seconds)
"""

DIES = """
import os
from prefray import flow

@flow
def dies() -> None:
    os._exit(3)
"""
