"""Two processes' worth of buses on one NATS server: a group shares the work, a plain
subscription sees everything: ``python examples/nats_groups.py [NATS_URL]``.

Needs ``pip install 'tidings[nats]'`` and a nats-server with JetStream
(``nats-server -js``) at NATS_URL (default ``nats://127.0.0.1:4222``).
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from dataclasses import dataclass

import tidings


@tidings.event("orders.placed")
@dataclass(frozen=True)
class OrderPlaced:
    order_id: str


async def main(url: str) -> None:
    billed: Counter[str] = Counter()
    audited: list[str] = []
    done = asyncio.Event()
    all_billed = asyncio.Event()

    async def bill(event: OrderPlaced) -> None:
        billed[event.order_id] += 1
        if sum(billed.values()) == 10:
            all_billed.set()

    async def audit(event: OrderPlaced) -> None:
        audited.append(event.order_id)
        if len(audited) == 10:
            done.set()

    # Two buses stand for two processes of one service.
    async with (
        tidings.Bus(transport=tidings.NatsTransport(url)) as one,
        tidings.Bus(transport=tidings.NatsTransport(url)) as two,
    ):
        for bus in (one, two):
            bus.subscribe(OrderPlaced, bill, group="billing")
        one.subscribe(OrderPlaced, audit)
        await one.start()
        await two.start()
        for n in range(10):
            await one.emit(OrderPlaced(f"o{n}"))
        await asyncio.wait_for(done.wait(), 30)
        await asyncio.wait_for(all_billed.wait(), 30)
    print(
        "audited", len(audited), "billed", sum(billed.values()), "each once:", set(billed.values())
    )


if __name__ == "__main__":
    asyncio.run(
        asyncio.wait_for(main(sys.argv[1] if len(sys.argv) > 1 else "nats://127.0.0.1:4222"), 60)
    )
