"""The floor of the gateway's HTTP ingest benchmark: a minimal Starlette endpoint that only
appends the request body to SQLite (one INSERT and commit per request, WAL, synchronous
NORMAL), on the same uvicorn, HTTP parser and event loop as ``tidings serve`` (httptools and
uvloop when installed). Prints its URL, serves until SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tidings.server.serve import http_implementation, loop_factory


def main() -> None:
    folder = tempfile.mkdtemp()
    db = sqlite3.connect(Path(folder) / "floor.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE events (position INTEGER PRIMARY KEY, body BLOB)")

    async def append(request: Request) -> Response:
        body = await request.body()
        cursor = db.execute("INSERT INTO events (body) VALUES (?)", (body,))
        return JSONResponse({"positions": [cursor.lastrowid]}, status_code=202)

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    app = Starlette(routes=[Route("/events", append, methods=["POST"])])
    server = Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", http=http_implementation()
        )
    )

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, lambda: setattr(server, "should_exit", True))
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn has no event for it
            await asyncio.sleep(0.01)
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        print(f"floor serving http://{host}:{port}", flush=True)
        await task

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve())


if __name__ == "__main__":
    main()
