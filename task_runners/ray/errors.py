"""Telling Ray's errors apart, with public Ray API only.

- `RayTaskError` whose cause is a plain exception: the code Ray ran for us
  raised (the user's own exceptions never get here: the engine catches them on
  the worker and returns a Failed state). Its cause is what `.result()` raises.
- `RayTaskError` whose cause is a `RayError`: an input of the task could not
  be computed (its producer died, its object was lost): a dependency failure.
- any other `RayError` (WorkerCrashedError, NodeDiedError, ObjectLostError,
  OutOfMemoryError, TaskCancelledError, RaySystemError...): Ray could not run
  or finish the task; the run is recorded Crashed with this text.
"""

from __future__ import annotations

__all__ = ["describe", "is_dependency_failure", "user_facing_error"]

_MAX_TEXT = 2000


def _ray_exceptions():
    import ray.exceptions

    return ray.exceptions


def is_dependency_failure(exc: BaseException) -> bool:
    errors = _ray_exceptions()
    return isinstance(exc, errors.RayTaskError) and isinstance(
        getattr(exc, "cause", None), errors.RayError
    )


def user_facing_error(exc: BaseException) -> BaseException:
    """What `.result()` of the crashed run raises: the underlying cause where Ray
    wrapped one (e.g. a ModuleNotFoundError on the worker), else Ray's error."""
    errors = _ray_exceptions()
    if isinstance(exc, errors.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            return cause
    return exc


def describe(exc: BaseException) -> str:
    """`Type: text`, Ray's own words, first lines only."""
    text = str(user_facing_error(exc)).strip()
    if len(text) > _MAX_TEXT:
        text = text[:_MAX_TEXT] + "..."
    return f"{type(user_facing_error(exc)).__name__}: {text}"
