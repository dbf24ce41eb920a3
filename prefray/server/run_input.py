"""Checking the input of a resume against the schema its pause saved (pure code).

A pause or suspend with `wait_for_input` records the input's JSON schema in
the Paused state (`state_details.run_input_schema`); resume refuses an input
that is missing or does not match it, with a message naming what is wrong, so
the paused flow only ever receives input it can use.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["input_refusal"]

# a schema is shown in a refusal only up to this many characters
_SCHEMA_PREVIEW = 400


def input_refusal(schema: dict[str, Any] | None, run_input: dict[str, Any] | None) -> str | None:
    """Why `run_input` cannot resume a pause that waits for `schema`, or None if it can."""
    if schema is None:
        return None
    if run_input is None:
        return (
            "the flow run waits for input and none was given; pass run_input matching "
            f"this JSON schema: {_preview(schema)}"
        )
    import jsonschema  # imported on first use: most servers never validate input

    validator_cls = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_cls(schema).iter_errors(run_input), key=lambda e: list(e.path))
    if not errors:
        return None
    parts = [f"{_where(e)}: {e.message}" for e in errors[:5]]
    return "the run input is invalid: " + "; ".join(parts)


def _where(error: Any) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return path or "input"


def _preview(schema: dict[str, Any]) -> str:
    text = json.dumps(schema, sort_keys=True)
    return text if len(text) <= _SCHEMA_PREVIEW else text[:_SCHEMA_PREVIEW] + "..."
