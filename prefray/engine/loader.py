"""Loading a flow from its entrypoint: "path/to/file.py:flow_fn" or "package.module:flow_fn".

Every failure is a `FlowLoadError` whose message says what was tried and what
went wrong (missing file, import error, no such name, not a flow), so that a
run that cannot be loaded ends Failed with that message.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from prefray.exceptions import PrefrayError

__all__ = ["FlowLoadError", "load_flow_from_entrypoint", "split_entrypoint"]


class FlowLoadError(PrefrayError):
    """The flow of a run could not be loaded from its entrypoint."""


def split_entrypoint(entrypoint: str) -> tuple[str, str]:
    target, sep, name = entrypoint.rpartition(":")
    if not sep or not target or not name:
        raise FlowLoadError(
            f"entrypoint {entrypoint!r} is not 'path/to/file.py:flow_fn' or 'module:flow_fn'"
        )
    return target, name


def load_flow_from_entrypoint(entrypoint: str) -> Any:
    """The `Flow` object named by `entrypoint`."""
    from prefray.flows import Flow

    target, name = split_entrypoint(entrypoint)
    module = _load_file(target) if _is_path(target) else _import_module(target)
    obj: Any = module
    for part in name.split("."):
        if not hasattr(obj, part):
            raise FlowLoadError(
                f"{target!r} has no attribute {name!r}; flows defined there: "
                f"{_flow_names(module) or 'none'}"
            )
        obj = getattr(obj, part)
    if not isinstance(obj, Flow):
        raise FlowLoadError(
            f"{entrypoint!r} is a {type(obj).__name__}, not a flow: decorate it with @flow"
        )
    return obj


def _is_path(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def _load_file(target: str) -> Any:
    path = Path(target).expanduser().resolve()
    if not path.is_file():
        raise FlowLoadError(f"flow file {str(path)!r} does not exist")
    # the file's siblings import as they do when the file is run as a script
    sys.path.insert(0, str(path.parent))
    module_name = f"__prefray_flow_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise FlowLoadError(f"{str(path)!r} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: B036 - a flow file may even call sys.exit()
        sys.modules.pop(module_name, None)
        raise FlowLoadError(f"importing {str(path)!r} failed: {_describe(exc)}") from exc
    return module


def _import_module(target: str) -> Any:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(target)
    except BaseException as exc:  # noqa: B036
        raise FlowLoadError(f"importing module {target!r} failed: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _flow_names(module: Any) -> str:
    from prefray.flows import Flow

    return ", ".join(sorted(k for k, v in vars(module).items() if isinstance(v, Flow)))
