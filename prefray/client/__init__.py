"""The prefray API client: the only code that speaks HTTP to the orchestration API.

>>> from prefray.client import get_client
>>> async with get_client() as client:                 # async
...     run = await client.read_flow_run(run_id)
>>> with get_client(sync_client=True) as client:       # sync
...     runs = client.read_flow_runs(state_types=["FAILED"])

Errors: HTTP 404 -> `ObjectNotFound`, 409 -> `ObjectAlreadyExists`, 401/403 ->
`Unauthorized`, other 4xx -> `InvalidRequest`, an API still unreachable after
`api_max_retries` retries -> `APIUnavailable` (all from `prefray.exceptions`).
"""

from prefray.client.clients import PrefrayClient, SyncPrefrayClient, get_client

__all__ = ["PrefrayClient", "SyncPrefrayClient", "get_client"]
