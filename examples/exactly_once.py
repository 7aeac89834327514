"""Exactly once in effect: the effect and the consumer's checkpoint in one SQLite
transaction: ``python examples/exactly_once.py``. Needs only ``pip install tidings``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tidings


@tidings.event("orders.placed")
@dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    amount: float


def charge(event: OrderPlaced, tx: tidings.Transaction) -> None:
    # Runs inside the transaction that commits the checkpoint: both or neither.
    tx.connection.execute(
        "INSERT INTO charges (order_id, amount) VALUES (?, ?)", (event.order_id, event.amount)
    )


async def main(directory: Path) -> None:
    path = directory / "events.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE charges (order_id TEXT PRIMARY KEY, amount REAL)")

    for run in range(3):  # three process lifetimes over one log
        async with tidings.Bus(store=f"sqlite:///{path}") as bus:
            bus.subscribe(OrderPlaced, charge, durable="billing", transactional=True)
            bus.publish(OrderPlaced(f"o{run}", 10.0 * (run + 1)))
            assert bus.store is not None
            async with asyncio.timeout(10):  # the consumer follows the log in its own task
                while await bus.store.load_checkpoint("billing") != run + 1:
                    await asyncio.sleep(0.01)

    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT order_id, amount FROM charges ORDER BY order_id").fetchall()
    print(rows)  # one row per order, never two
    assert rows == [("o0", 10.0), ("o1", 20.0), ("o2", 30.0)]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp)))
