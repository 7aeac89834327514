"""A typed event, handlers, publish and emit, a dead letter: ``python examples/quickstart.py``.

Needs only ``pip install tidings``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import tidings


@tidings.event("orders.placed")
@dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    amount: float


async def main() -> None:
    async with tidings.Bus() as bus:

        @bus.on(OrderPlaced, priority=10, where=lambda e: e.amount > 100)
        def audit(event: OrderPlaced) -> None:
            print("big order", event.order_id)

        @bus.on("orders.>")
        async def log_any(envelope: tidings.Envelope[object]) -> None:
            print("seen", envelope.topic, envelope.id)

        @bus.on(tidings.DeadLetter)
        def dead(letter: tidings.DeadLetter) -> None:
            print("dead letter from", letter.handler, "-", letter.reason)

        @bus.on(OrderPlaced)
        def reserve(event: OrderPlaced) -> None:
            if event.amount > 1000:
                raise ValueError(f"no stock for {event.order_id}")

        bus.publish(OrderPlaced("o1", 120.0))  # sync: inline handlers ran on return
        delivery = await bus.emit(OrderPlaced("o2", 5000.0))  # awaits every handler
        print("errors:", delivery.errors)


if __name__ == "__main__":
    asyncio.run(main())
