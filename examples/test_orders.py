"""Testing code that publishes events, with a fresh bus per test and ``bus.record()``:
``pytest examples/test_orders.py``. Needs ``pip install tidings pytest``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import tidings


@tidings.event("orders.placed")
@dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    amount: float


def checkout(bus: tidings.Bus, cart: list[float]) -> None:
    """The code under test: publishes one order for the cart's total."""
    bus.publish(OrderPlaced("o1", sum(cart)))


@pytest.fixture
def bus() -> Iterator[tidings.Bus]:
    with tidings.Bus() as bus:
        yield bus


def test_checkout_publishes_one_order_with_the_total(bus: tidings.Bus) -> None:
    with bus.record() as recorded:
        checkout(bus, [100.0, 20.0])
    [order] = recorded.assert_published(OrderPlaced, count=1)
    assert order.amount == 120.0
