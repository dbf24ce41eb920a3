"""Test helpers: run a block against a throw-away API and database.

>>> from prefray.testing import prefray_test_harness
>>> with prefray_test_harness() as settings:
...     my_flow()          # recorded in a fresh SQLite database, gone afterwards
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import prefray.settings as settings_module
from prefray.client import embedded
from prefray.settings import Settings, set_process_settings, use_settings

__all__ = ["prefray_test_harness"]

# What decides which API and database a process talks to.
_ENV_KEYS = ("PREFRAY_HOME", "PREFRAY_API_URL", "PREFRAY_API_DATABASE_URL")


@contextlib.contextmanager
def prefray_test_harness(mode: embedded.Mode = "thread") -> Iterator[Settings]:
    """Point the process (settings and environment) at a fresh embedded API on a
    new SQLite database in a temporary `PREFRAY_HOME`; restore both on exit and
    delete the directory. Yields the settings in force inside the block.

    `mode="thread"` (the default here) starts in a fraction of the time a
    subprocess needs, which is what a test suite wants.
    """
    saved_env = {key: os.environ.get(key) for key in _ENV_KEYS}
    saved_settings = settings_module._process_settings
    home = Path(tempfile.mkdtemp(prefix="prefray-test-"))
    base: Settings | None = None
    try:
        _set_env({"PREFRAY_HOME": str(home), "PREFRAY_API_URL": None})
        os.environ.pop("PREFRAY_API_DATABASE_URL", None)
        base = Settings.from_environment().with_overrides(api_url=None, api_database_url=None)
        url = embedded.ensure_api(base, mode=mode)
        with use_settings(base.with_overrides(api_url=url)) as settings:
            yield settings
    finally:
        if base is not None:
            embedded.stop_api(base)
        _set_env(saved_env)
        set_process_settings(saved_settings)
        shutil.rmtree(home, ignore_errors=True)


def _set_env(values: dict[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
