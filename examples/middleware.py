"""Retry with backoff, a timeout and a circuit breaker around a flaky handler:
``python examples/middleware.py``. Needs only ``pip install tidings``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import tidings
from tidings.middleware import CircuitBreaker, Retry, Timeout


@tidings.event("payments.requested")
@dataclass(frozen=True)
class PaymentRequested:
    payment_id: str


async def main() -> None:
    calls: dict[str, int] = {}

    async def charge(event: PaymentRequested) -> None:  # fails twice, then succeeds
        calls[event.payment_id] = calls.get(event.payment_id, 0) + 1
        if calls[event.payment_id] < 3:
            raise ConnectionError("gateway unreachable")
        print(f"charged {event.payment_id} on attempt {calls[event.payment_id]}")

    async with tidings.Bus() as bus:
        bus.subscribe(
            PaymentRequested,
            charge,
            middleware=[
                Retry(3, backoff=0.01),
                CircuitBreaker(5, reset_after=30),
                Timeout(1.0),
            ],
        )
        delivery = await bus.emit(PaymentRequested("p1"))
        delivery.raise_errors()  # nothing: the third attempt succeeded
    assert calls == {"p1": 3}


if __name__ == "__main__":
    asyncio.run(main())
