"""The durable log on SQLite: append, replay, a consumer that resumes after a restart:
``python examples/durable_log.py``. Needs only ``pip install tidings``.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tidings


@tidings.event("accounts.deposited")
@dataclass(frozen=True)
class Deposited:
    account: str
    amount: int


async def caught_up(bus: tidings.Bus, consumer: str, position: int) -> None:
    """Wait (10 s at most) until ``consumer``'s checkpoint reaches ``position``."""
    assert bus.store is not None
    async with asyncio.timeout(10):
        while await bus.store.load_checkpoint(consumer) != position:
            await asyncio.sleep(0.01)


async def main(directory: Path) -> None:
    url = f"sqlite:///{directory / 'events.db'}"
    mailed: list[int] = []

    def mail(event: Deposited) -> None:
        mailed.append(event.amount)

    # First run: three deposits; the mailer handles them and checkpoints.
    async with tidings.Bus(store=url) as bus:
        bus.subscribe(Deposited, mail, durable="mailer")
        for amount in (10, 20, 30):
            bus.publish(Deposited("alice", amount))
        balance = await bus.replay(lambda total, e: total + e.amount, 0)
        print("balance after run 1:", balance)
        await caught_up(bus, "mailer", 3)  # the mailer follows the log in its own task

    # Second run (a restart): one more deposit; the mailer resumes after its checkpoint.
    async with tidings.Bus(store=url) as bus:
        bus.subscribe(Deposited, mail, durable="mailer")
        bus.publish(Deposited("alice", 40))
        print("balance after run 2:", await bus.replay(lambda total, e: total + e.amount, 0))
        await caught_up(bus, "mailer", 4)
    print("mailed:", mailed)  # each deposit once: [10, 20, 30, 40]
    assert sorted(mailed) == [10, 20, 30, 40]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp)))
