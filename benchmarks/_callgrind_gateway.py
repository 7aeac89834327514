"""The gateway in one process, for instructions per event under callgrind (no uvicorn).

``python _callgrind_gateway.py N`` builds the gateway service (the Starlette app of
``tidings serve`` over a SQLite log, one route ``orders.> -> audit.orders`` firing for
``data.amount > 100``) and, inside one ``functools.reduce`` call, runs N steps of 16
concurrent single-event POSTs (structured mode; 80 % of them fire the route), each step
until the 16 events are accepted (202) and routed. The ASGI app is called directly::

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \\
        --dump-after=functools_reduce --callgrind-out-file=/tmp/gateway.%p \\
        .venv/bin/python benchmarks/_callgrind_gateway.py 50

Divide the profile's total by 16 N for instructions per event.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import sys
import tempfile
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import tidings
from tidings.gateway import Gateway, load_config
from tidings.server.app import create_app

CONFIG = (
    "routes: [{name: audit, from: orders.>, when: 'data.amount > 100', "
    "to: [{topic: audit.orders}]}]\n"
)
CONCURRENCY = 16


def main(folder: Path, steps: int) -> None:
    path = folder / "gateway.yaml"
    path.write_text(CONFIG)
    loop = asyncio.new_event_loop()
    bus = tidings.Bus(store=f"sqlite:///{folder}/events.db")
    loop.run_until_complete(bus.__aenter__())
    routed = [0]
    target = [0]  # the routed count the step waits for
    waiting: list[asyncio.Future[None]] = []

    def on_routed(*_: Any) -> None:
        routed[0] += 1
        if waiting and routed[0] >= target[0] and not waiting[0].done():
            waiting[0].set_result(None)

    gateway = Gateway(bus, load_config([path]), paths=[path], watch=False, on_routed=on_routed)
    app = create_app(gateway)
    loop.run_until_complete(gateway.start())
    sent = [0]

    async def post(body: bytes) -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/events",
            "raw_path": b"/events",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"bench"),
                (b"content-type", b"application/cloudevents+json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("bench", 80),
        }
        messages: list[MutableMapping[str, Any]] = [
            {"type": "http.request", "body": body, "more_body": False}
        ]
        status = [0]

        async def receive() -> MutableMapping[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]

        await app(scope, receive, send)
        return status[0]

    def bodies(step: int) -> list[bytes]:
        events = []
        for n in range(step * CONCURRENCY, (step + 1) * CONCURRENCY):
            event = {
                "specversion": "1.0",
                "id": f"ev-{n}",
                "source": "/bench",
                "type": "orders.created",
                "data": {"n": n, "amount": 50 if n % 5 == 0 else 150},
            }
            events.append(json.dumps(event).encode())
        return events

    prepared = [bodies(step) for step in range(steps + 1)]  # made outside the counted calls

    async def step() -> None:
        posts = prepared[sent[0] // CONCURRENCY]
        sent[0] += CONCURRENCY
        done = loop.create_future()
        waiting[:] = [done]
        target[0] = sent[0]
        statuses = await asyncio.gather(*(post(body) for body in posts))
        assert statuses == [202] * CONCURRENCY, statuses
        await asyncio.wait_for(done, 30)

    loop.run_until_complete(step())  # warm
    functools.reduce(lambda _, __: loop.run_until_complete(step()), range(steps), None)
    loop.run_until_complete(gateway.stop(5))
    loop.run_until_complete(bus.__aexit__(None, None, None))
    loop.close()


if __name__ == "__main__":
    gc.disable()
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(tmp), int(sys.argv[1]))
