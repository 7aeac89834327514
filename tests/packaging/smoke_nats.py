"""The nats extra: a NatsTransport carries an event to a handler (server URL in argv[1])."""

from __future__ import annotations

import asyncio
import sys

import tidings


async def main(url: str) -> None:
    got: asyncio.Queue[object] = asyncio.Queue()
    async with tidings.Bus(transport=tidings.NatsTransport(url)) as bus:
        bus.subscribe("smoke.>", got.put_nowait, group="smoke")
        await bus.start()
        await bus.emit({"n": 1}, topic="smoke.ping")
        assert await asyncio.wait_for(got.get(), 30) == {"n": 1}


asyncio.run(main(sys.argv[1]))
print("ok")
