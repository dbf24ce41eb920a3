"""The embedded API's subprocess: `python -m prefray.client._embedded_child FD`.

Reads its settings as one JSON line on stdin, serves the API on the listening
socket it inherited as file descriptor FD, and exits when stdin reaches EOF:
the parent holds the other end, so the server goes away with its driver even
when the driver is killed with SIGKILL.
"""

from __future__ import annotations

import json
import socket
import sys
import threading

import uvicorn

from prefray.settings import Settings


def _exit_when_parent_goes(server: uvicorn.Server) -> None:
    sys.stdin.buffer.read()  # blocks until the parent closes the pipe or dies
    server.should_exit = True


def main(argv: list[str]) -> None:
    sock = socket.socket(fileno=int(argv[1]))
    settings = Settings.model_validate(json.loads(sys.stdin.buffer.readline()))
    from prefray.server.app import create_app
    from prefray.server.serve import tune_gc

    config = uvicorn.Config(
        create_app(settings), log_level="warning", access_log=False, timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    threading.Thread(target=_exit_when_parent_goes, args=(server,), daemon=True).start()
    tune_gc()  # this process only serves the API
    server.run(sockets=[sock])


if __name__ == "__main__":
    main(sys.argv)
