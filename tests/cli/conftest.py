"""The CLI tests run against a throw-away embedded API (thread) and database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from prefray.settings import Settings
from prefray.testing import prefray_test_harness


@pytest.fixture(scope="module")
def harness() -> Iterator[Settings]:
    with prefray_test_harness() as settings:
        yield settings
