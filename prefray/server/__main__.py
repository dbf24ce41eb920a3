"""`python -m prefray.server [--host H] [--port P]`: serve the API in the foreground."""

from __future__ import annotations

import argparse
import sys

from prefray.exceptions import ConfigurationError
from prefray.server.app import DEFAULT_MAX_REQUEST_BYTES
from prefray.server.serve import run_server
from prefray.settings import get_current_settings


def main(argv: list[str] | None = None) -> int:
    settings = get_current_settings()
    parser = argparse.ArgumentParser(prog="python -m prefray.server", description=__doc__)
    parser.add_argument("--host", default=settings.server_host)
    parser.add_argument("--port", type=int, default=settings.server_port)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES)
    args = parser.parse_args(argv)
    try:
        run_server(
            settings,
            args.host,
            args.port,
            log_level=args.log_level,
            max_request_bytes=args.max_request_bytes,
        )
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
