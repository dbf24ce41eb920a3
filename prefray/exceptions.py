"""prefray's exceptions.

PrefrayError
├── ObjectNotFound            the API has no object with that id (HTTP 404)
├── ObjectAlreadyExists       a create conflicted with an existing object (HTTP 409)
├── InvalidRequest            the API refused a malformed request (HTTP 4xx)
│   └── Unauthorized          a missing or wrong API key (HTTP 401)
├── APIUnavailable            the API could not be reached after retries
├── InvalidTransition         a state transition the orchestration rules refuse
├── MappingLengthMismatch     .map() iterables of different lengths
├── MappingMissingIterable    .map() with no iterable argument
├── ParameterTypeError        parameters failed validation
├── ParameterBindError        parameters do not fit the function's signature
├── ReservedArgumentError     a function uses a name prefray reserves
├── UpstreamTaskError         an upstream task run did not complete
├── MissingResult             a state holds no result to return
├── MissingContextError       called outside a flow or task run (get_run_logger)
├── UnfinishedRun             a result was asked of a run that has not finished
├── SerializationError        a value could not be serialized (names what)
├── CrashedRun                a run crashed (worker death, interruption)
├── CancelledRun              a run was cancelled
├── FailedRun                 a run failed with no exception to re-raise
├── TaskRunTimeout/FlowRunTimeout  a run went over its timeout_seconds
├── PausedRun                 raised to stop a flow that was suspended
├── FlowPauseTimeout          a paused run was not resumed in time
├── NotPausedError            resume asked for a run that is not paused
├── InvalidRunInput           resume without the input a pause waits for, or invalid input
├── ConfigurationError        settings that cannot work (e.g. unreachable API)
└── TaskRunnerError           a task runner could not start or submit
"""

from __future__ import annotations

__all__ = [
    "APIUnavailable",
    "CancelledRun",
    "ConfigurationError",
    "CrashedRun",
    "FailedRun",
    "FlowPauseTimeout",
    "FlowRunTimeout",
    "InvalidRequest",
    "InvalidRunInput",
    "InvalidTransition",
    "MappingLengthMismatch",
    "MappingMissingIterable",
    "MissingContextError",
    "MissingResult",
    "NotPausedError",
    "ObjectAlreadyExists",
    "ObjectNotFound",
    "ParameterBindError",
    "ParameterTypeError",
    "PausedRun",
    "PrefrayError",
    "ReservedArgumentError",
    "SerializationError",
    "TaskRunTimeout",
    "TaskRunnerError",
    "Unauthorized",
    "UnfinishedRun",
    "UpstreamTaskError",
]


class PrefrayError(Exception):
    """The root of every error prefray raises on purpose."""


class ObjectNotFound(PrefrayError):
    pass


class ObjectAlreadyExists(PrefrayError):
    pass


class InvalidRequest(PrefrayError):
    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class Unauthorized(InvalidRequest):
    pass


class APIUnavailable(PrefrayError):
    pass


class InvalidTransition(PrefrayError):
    pass


class MappingLengthMismatch(PrefrayError):
    pass


class MappingMissingIterable(PrefrayError):
    pass


class ParameterTypeError(PrefrayError):
    pass


class ParameterBindError(PrefrayError, TypeError):
    pass


class ReservedArgumentError(PrefrayError, TypeError):
    pass


class UpstreamTaskError(PrefrayError):
    pass


class MissingResult(PrefrayError):
    pass


class MissingContextError(PrefrayError):
    pass


class UnfinishedRun(PrefrayError):
    pass


class SerializationError(PrefrayError):
    pass


class CrashedRun(PrefrayError):
    pass


class CancelledRun(PrefrayError):
    pass


class FailedRun(PrefrayError):
    pass


class TaskRunTimeout(PrefrayError, TimeoutError):
    pass


class FlowRunTimeout(PrefrayError, TimeoutError):
    pass


class PausedRun(PrefrayError):
    pass


class FlowPauseTimeout(PrefrayError, TimeoutError):
    pass


class NotPausedError(PrefrayError):
    pass


class ConfigurationError(PrefrayError):
    pass


class TaskRunnerError(PrefrayError):
    pass


class InvalidRunInput(PrefrayError, ValueError):
    """Resume was refused: the pause waits for input that is missing or does not validate."""
