"""Wrong typed usage: mypy --strict must reject each line marked ``# E``."""

from __future__ import annotations

from dataclasses import dataclass

import tidings
import tidings.middleware
from tidings import Envelope


@tidings.event("typing.bad.placed")
@dataclass(frozen=True)
class OrderPlaced:
    order_id: str


@tidings.event("typing.bad.shipped")
@dataclass(frozen=True)
class OrderShipped:
    parcel: str


bus = tidings.Bus()


def on_shipped(event: OrderShipped) -> None: ...


def on_shipped_envelope(envelope: Envelope[OrderShipped]) -> None: ...


def takes_int(n: int) -> None: ...


def takes_two(a: OrderPlaced, b: OrderPlaced) -> None: ...


bus.subscribe(OrderPlaced, on_shipped)  # E: arg-type
bus.subscribe(OrderPlaced, on_shipped_envelope)  # E: arg-type
bus.subscribe(OrderPlaced, takes_int)  # E: arg-type
bus.subscribe(OrderPlaced, takes_two)  # E: arg-type
bus.on(OrderPlaced)(on_shipped)  # E: arg-type
bus.on(OrderPlaced)(takes_int)  # E: arg-type
bus.subscribe(OrderPlaced, on_shipped, where=lambda e: e.parcel == "x")  # E: arg-type
shipped: Envelope[OrderShipped] = bus.publish(OrderPlaced("o"))  # E: arg-type


@bus.on(OrderPlaced)  # E: arg-type
def wrong(event: OrderShipped) -> None: ...


def one_at_a_time(event: OrderPlaced) -> None: ...


bus.subscribe(OrderPlaced, one_at_a_time, batch=tidings.Batch())  # E: arg-type
bus.subscribe(OrderPlaced, one_at_a_time, overflow="sometimes")  # E: call-overload


def charge(event: OrderPlaced, transaction: tidings.Transaction) -> None: ...


bus.subscribe(OrderPlaced, one_at_a_time, durable="billing", transactional=True)  # E: call-overload
bus.subscribe(OrderPlaced, charge, durable="billing")  # E: arg-type
bus.subscribe(OrderPlaced, charge, transactional=True)  # E: call-overload
bus.on(OrderPlaced, durable="billing", transactional=True)(one_at_a_time)  # E: arg-type
bus.on(OrderPlaced, durable="billing")(charge)  # E: arg-type


def not_middleware(event: OrderPlaced) -> None: ...


bus.subscribe(OrderPlaced, one_at_a_time, middleware=[not_middleware])  # E: list-item
bus.use(tidings.middleware.Retry)  # E: arg-type

# The options declared once (SubscribeOptions, LogFollowOptions) are still checked.
bus.subscribe(OrderPlaced, one_at_a_time, workers="2")  # E: call-overload
bus.subscribe(OrderPlaced, one_at_a_time, no_such_option=True)  # E: call-overload
bus.subscribe(OrderPlaced, charge, durable="b", transactional=True, once=True)  # E: call-overload
bus.on(OrderPlaced, maxsize=None)(one_at_a_time)  # E: call-overload
