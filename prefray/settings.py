"""Settings: read from the environment (and an optional profile file), frozen
into a picklable snapshot that travels to task-run workers.

Precedence: explicit overrides > environment variables (`PREFRAY_*`) >
the profile file (`$PREFRAY_HOME/profile.toml`, a flat table of the same
`PREFRAY_*` names) > defaults.

The API key is a `SecretStr`: it never appears in a repr or a log line.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "Settings",
    "get_current_settings",
    "temporary_settings",
    "use_settings",
]

_ENV_PREFIX = "PREFRAY_"


class Settings(BaseModel):
    """A frozen snapshot of every knob; pickles cleanly for Ray workers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    home: Path = Field(default_factory=lambda: Path("~/.prefray").expanduser())
    api_url: str | None = None  # None: the driver runs an embedded API
    api_key: SecretStr | None = None
    api_database_url: str | None = None  # None: SQLite at $PREFRAY_HOME/prefray.db
    api_request_timeout: float = 30.0
    api_max_retries: int = 6  # connection errors and 429/502/503 on safe requests
    server_host: str = "127.0.0.1"
    server_port: int = 4200
    logging_level: str = "INFO"
    logging_to_api: bool = True
    log_batch_interval: float = 0.5  # seconds between background log shipments
    log_flush_timeout: float = 5.0  # bound on any blocking flush (exit never hangs)
    state_batch_interval: float = 0.2  # seconds between batched state reports
    state_batch_size: int = 1000
    local_storage_path: Path | None = None  # default: $PREFRAY_HOME/storage
    persist_results: bool = False
    result_serializer: str = "pickle"
    task_runner_max_workers: int | None = None

    @property
    def database_url(self) -> str:
        if self.api_database_url:
            return self.api_database_url
        return f"sqlite+aiosqlite:///{self.home / 'prefray.db'}"

    @property
    def storage_path(self) -> Path:
        return self.local_storage_path or self.home / "storage"

    def with_overrides(self, **overrides: Any) -> Settings:
        return self.model_copy(update=overrides)

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("PREFRAY_HOME", "~/.prefray")).expanduser()
        values: dict[str, Any] = {}
        values.update(_read_profile(home / "profile.toml"))
        values.update(_prefixed(env))
        values["home"] = home
        return cls.model_validate(values)


def _prefixed(env: Mapping[str, str]) -> dict[str, Any]:
    fields = Settings.model_fields
    out: dict[str, Any] = {}
    for key, value in env.items():
        if key.startswith(_ENV_PREFIX):
            name = key[len(_ENV_PREFIX) :].lower()
            if name in fields and name != "home" and value != "":
                out[name] = value
    return out


def _read_profile(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    return _prefixed({str(k): str(v) for k, v in data.items()})


_current: contextvars.ContextVar[Settings | None] = contextvars.ContextVar(
    "prefray_settings", default=None
)
_process_settings: Settings | None = None


def get_current_settings() -> Settings:
    """The settings in force: the innermost `use_settings`, else the process's."""
    global _process_settings
    settings = _current.get()
    if settings is not None:
        return settings
    if _process_settings is None:
        _process_settings = Settings.from_environment()
    return _process_settings


def set_process_settings(settings: Settings | None) -> None:
    """Replace the process-wide settings (a worker re-entering a snapshot, the
    embedded server publishing its URL). `None` re-reads the environment."""
    global _process_settings
    _process_settings = settings


@contextlib.contextmanager
def use_settings(settings: Settings) -> Iterator[Settings]:
    """Run a block under a settings snapshot (what a worker does for each task run)."""
    token = _current.set(settings)
    try:
        yield settings
    finally:
        _current.reset(token)


@contextlib.contextmanager
def temporary_settings(**overrides: Any) -> Iterator[Settings]:
    """Run a block with some settings changed: `temporary_settings(api_url=...)`."""
    with use_settings(get_current_settings().with_overrides(**overrides)) as s:
        yield s
