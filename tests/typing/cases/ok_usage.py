"""Correct typed usage: mypy --strict must accept every line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import tidings
import tidings.middleware
from tidings import Envelope


@tidings.event("typing.orders.placed")
@dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    amount: float


@dataclass(frozen=True)
class BigOrderPlaced(OrderPlaced):
    vip: bool


bus = tidings.Bus()


@bus.on(OrderPlaced, priority=10, where=lambda e: e.amount > 100)
def audit(event: OrderPlaced) -> None:
    print(event.order_id.upper(), event.amount + 1)


@bus.on(OrderPlaced)
async def notify(event: OrderPlaced) -> str:
    return event.order_id


@bus.on(OrderPlaced)
def with_envelope(envelope: Envelope[OrderPlaced]) -> None:
    print(envelope.id, envelope.payload.amount)


@bus.on(OrderPlaced)
def accepts_anything(event: object) -> None:
    print(event)


@bus.on("typing.orders.>")
async def log_any(event: Any) -> None:
    print(event)


def handler(event: OrderPlaced) -> None:
    print(event.amount)


sub: tidings.Subscription[OrderPlaced] = bus.subscribe(OrderPlaced, handler, once=True)
sub.cancel()
with bus.subscribe(OrderPlaced, with_envelope):
    pass
envelope: Envelope[OrderPlaced] = bus.publish(OrderPlaced("o1", 120.0))
amount: float = envelope.payload.amount
big: Envelope[BigOrderPlaced] = bus.publish(BigOrderPlaced("o2", 1.0, vip=True))
recorded: list[OrderPlaced]
with bus.record() as recorder:
    recorded = recorder.of(OrderPlaced)


async def main() -> None:
    delivery: tidings.Delivery[OrderPlaced] = await bus.emit(OrderPlaced("o1", 120.0))
    delivery.raise_errors()
    async with bus.stream(OrderPlaced, maxsize=8) as events:
        async for event in events:
            print(event.amount)


@bus.on(OrderPlaced, batch=tidings.Batch(max_size=64))
def bulk(events: list[OrderPlaced]) -> None:
    print(sum(e.amount for e in events))


@bus.on(OrderPlaced, batch=tidings.Batch(max_size=64))
async def bulk_envelopes(envelopes: list[Envelope[OrderPlaced]]) -> None:
    print([e.id for e in envelopes])


queued: tidings.Subscription[OrderPlaced] = bus.subscribe(
    OrderPlaced, handler, workers=4, maxsize=100, overflow="drop_oldest"
)
stats: tidings.SubscriptionStatistics = queued.statistics()


def charge(event: OrderPlaced, transaction: tidings.Transaction) -> None:
    transaction.connection.execute("INSERT INTO charges VALUES (?)", (event.order_id,))


async def charge_async(event: OrderPlaced, transaction: tidings.Transaction) -> None:
    await transaction.connection.execute("INSERT INTO charges VALUES (%s)", (event.order_id,))


def transactional(logged: tidings.Bus) -> None:
    billing: tidings.Subscription[OrderPlaced] = logged.subscribe(
        OrderPlaced, charge, durable="billing", transactional=True
    )
    logged.subscribe(OrderPlaced, charge_async, durable="billing-pg", transactional=True)
    logged.subscribe("orders.>", charge, durable="billing-any", transactional=True)
    billing.cancel()

    @logged.on(OrderPlaced, durable="ledger", transactional=True)
    def ledger(event: OrderPlaced, transaction: tidings.Transaction) -> None:
        transaction.connection.execute("INSERT INTO ledger VALUES (?)", (event.amount,))

    @logged.on(OrderPlaced, durable="audit", transactional=True)
    async def audit(envelope: Envelope[OrderPlaced], transaction: tidings.Transaction) -> None:
        await transaction.connection.execute("INSERT INTO audit VALUES (%s)", (envelope.id,))

    ledger(OrderPlaced("o1", 1.0), cast(tidings.Transaction, None))


def logging_middleware(handler: tidings.middleware.Handler) -> tidings.middleware.Handler:
    def wrapped(env: Envelope[Any]) -> Any:
        return handler(env)

    return wrapped


composed: tidings.Middleware = logging_middleware
bus.use(composed, tidings.middleware.RateLimit(100, burst=10))
retried: tidings.Subscription[OrderPlaced] = bus.subscribe(
    OrderPlaced,
    handler,
    middleware=[tidings.middleware.Retry(3, backoff=0.1), tidings.middleware.Dedupe()],
)


@bus.on(OrderPlaced, middleware=[tidings.middleware.Timeout(2.0)])
async def limited(event: OrderPlaced) -> None:
    print(event.amount)
