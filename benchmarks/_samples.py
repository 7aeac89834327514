"""The sample event data the benchmarks send: an order, as plain JSON values (what the raw
clients publish, and what a bus publishes as a dict payload)."""

from __future__ import annotations

from typing import Any

__all__ = ("AMOUNT", "order_data")

AMOUNT = 12.5
"""The amount of every sample order."""


def order_data(order_id: str) -> dict[str, Any]:
    """The data of the order ``order_id`` (a new dict each call)."""
    return {"order_id": order_id, "amount": AMOUNT}
