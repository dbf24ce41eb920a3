"""Tasks served by the task-server tests (imported by name in subprocesses).

Each execution appends one line to the file named by `PREFRAY_TEST_LEDGER`
(O_APPEND writes of one short line are atomic), so a test can count them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from prefray import task


def _record(line: str) -> None:
    with open(os.environ["PREFRAY_TEST_LEDGER"], "a") as fh:
        fh.write(line + "\n")


@task
def record(n: int) -> int:
    _record(f"{n} {os.getpid()}")
    time.sleep(0.02)
    return n * 10


@task
def hang_first_time(n: int) -> int:
    """Blocks for a minute on its first execution (to be killed), returns at once after."""
    _record(f"start {n} {os.getpid()}")
    flag = Path(os.environ["PREFRAY_TEST_LEDGER"] + f".{n}.started")
    if not flag.exists():
        flag.touch()
        time.sleep(60)
    return n
