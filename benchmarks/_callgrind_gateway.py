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

``python _callgrind_gateway.py N batch`` runs N steps of 4 concurrent POSTs of 100 events
each (batch mode, as G3's batch row) instead: divide by 400 N. A further ``unrouted``
argument raises the route's threshold so that it fires for none (G3's "no route fires").
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import tidings
from tidings.gateway import Gateway, load_config
from tidings.server.app import create_app
from tidings.testing.asgi import call_asgi

CONFIG = (
    "routes: [{{name: audit, from: orders.>, when: 'data.amount > {}', "
    "to: [{{topic: audit.orders}}]}}]\n"
)


def main(folder: Path, steps: int, batch: bool, fires: bool = True) -> None:
    concurrency, size = (4, 100) if batch else (16, 1)
    kind = b"application/cloudevents-batch+json" if batch else b"application/cloudevents+json"
    path = folder / "gateway.yaml"
    path.write_text(CONFIG.format(100 if fires else 1000))
    loop = asyncio.new_event_loop()
    bus = tidings.Bus(store=f"sqlite:///{folder}/events.db")
    loop.run_until_complete(bus.__aenter__())
    routed = [0]
    target = [0]  # the routed count the step waits for (events and the audit events fired)
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
        headers = [
            (b"host", b"bench"),
            (b"content-type", kind),
            (b"content-length", str(len(body)).encode()),
        ]
        status, _ = await call_asgi(app, "POST", "/events", body, headers)
        return status

    def event(n: int) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": f"ev-{n}",
            "source": "/bench",
            "type": "orders.created",
            "data": {"n": n, "amount": 50 if n % 5 == 0 else 150},
        }

    def bodies(step: int) -> list[bytes]:
        bodies = []
        for post in range(step * concurrency, (step + 1) * concurrency):
            events = [event(n) for n in range(post * size, (post + 1) * size)]
            bodies.append(json.dumps(events if batch else events[0]).encode())
        return bodies

    prepared = [bodies(step) for step in range(steps + 1)]  # made outside the counted calls
    per_step = concurrency * size
    # the audit events fired by the events of the steps before each step (a running sum)
    fired = [0]
    for step_first in range(0, (steps + 1) * per_step, per_step):
        fired.append(
            fired[-1] + sum(fires and n % 5 != 0 for n in range(step_first, step_first + per_step))
        )

    async def step() -> None:
        posts = prepared[sent[0] // (concurrency * size)]
        sent[0] += concurrency * size
        done = loop.create_future()
        waiting[:] = [done]
        target[0] = sent[0] + fired[sent[0] // (concurrency * size)]
        statuses = await asyncio.gather(*(post(body) for body in posts))
        assert statuses == [202] * concurrency, statuses
        await asyncio.wait_for(done, 30)

    loop.run_until_complete(step())  # warm
    functools.reduce(lambda _, __: loop.run_until_complete(step()), range(steps), None)
    loop.run_until_complete(gateway.stop(5))
    loop.run_until_complete(bus.__aexit__(None, None, None))
    loop.close()


if __name__ == "__main__":
    gc.disable()
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(tmp), int(sys.argv[1]), "batch" in sys.argv[2:], "unrouted" not in sys.argv[2:])
