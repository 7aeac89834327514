"""The shared consumer's memory of settled messages (``tidings.transports._consumer``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tidings.clock import HybridClock
from tidings.event import Envelope
from tidings.transports import DeliveryPolicy, Message
from tidings.transports._consumer import Consumer


class _Raw:
    """A raw message whose settlements are counted."""

    def __init__(self, sequence: int) -> None:
        self.sequence = sequence
        self.subject = "orders"
        self.headers = None
        self.data = b"{}"
        self.acks = 0

    async def ack(self) -> None:
        self.acks += 1

    async def nak(self, delay: float | None = None) -> None:
        raise AssertionError("not retried")

    term = ack

    async def in_progress(self) -> None:
        return


def _consumer(
    batches: asyncio.Queue[list[_Raw]],
    handler: Any,
    policy: DeliveryPolicy,
    leases: bool = True,
) -> Consumer:
    """A consumer of the batches put on ``batches``, each message decoded as a fresh event."""
    clock = HybridClock()

    async def fetch(batch: int, timeout: float) -> list[Any]:
        try:
            return await asyncio.wait_for(batches.get(), timeout)
        except TimeoutError:
            return []

    def decode(raw: _Raw) -> Envelope[Any]:
        return Envelope("orders", {}, clock.now(), None, "test", {}, None, clock.node)

    return Consumer(
        pattern="orders",
        group=None,
        name="orders",
        policy=policy,
        handler=handler,
        fetch=fetch,
        decode=decode,
        meta=lambda raw: (1, raw.sequence),
        dead_letter=None,
        clock=clock,
        leases=leases,
    )


async def test_copies_of_settled_messages_are_recognised_for_at_least_remember_settlements() -> (
    None
):
    # Each settlement is remembered for at least the next 1,024 (prefetch 256): after 2,500
    # messages, a copy of the one settled 1,023 before the last and a copy of the last are
    # both acked again without a handler call.
    handled: list[int] = []
    batches: asyncio.Queue[list[_Raw]] = asyncio.Queue()
    all_handled = asyncio.Event()

    async def handler(message: Message) -> None:
        handled.append(message.sequence)
        if len(handled) == 2500:
            all_handled.set()

    consumer = _consumer(batches, handler, DeliveryPolicy(prefetch=256, workers=1))
    consumer.start()
    try:
        originals = [_Raw(sequence) for sequence in range(1, 2501)]
        for start in range(0, 2500, 64):
            batches.put_nowait(originals[start : start + 64])
        await asyncio.wait_for(all_handled.wait(), 30)
        first, last = _Raw(2500 - 1023), _Raw(2500)
        batches.put_nowait([first, last])
        for _ in range(1000):  # bounded: the copies are settled within a few loop passes
            if first.acks and last.acks:
                break
            await asyncio.sleep(0.01)
    finally:
        await consumer.cancel(5)
    assert handled == list(range(1, 2501))
    assert (first.acks, last.acks) == (1, 1)
    stats = consumer.stats()
    assert (stats.acked, stats.duplicates, stats.delivered) == (2500, 2, 2500)


@pytest.mark.parametrize(
    ("heartbeats", "leases"),
    [(True, True), (False, True), (True, False)],
    ids=["heartbeats", "no-heartbeats", "no-leases"],
)
async def test_a_copy_of_a_running_or_queued_message_is_dropped(
    heartbeats: bool, leases: bool
) -> None:
    # Copies of a message a worker is running and of one queued behind it (redelivered
    # after ack_wait) are dropped, heartbeats or not: neither is handled a second time, and
    # no copy is settled (the original settles when its handler returns).
    handled: list[int] = []
    running, release = asyncio.Event(), asyncio.Event()
    batches: asyncio.Queue[list[_Raw]] = asyncio.Queue()

    async def handler(message: Message) -> None:
        handled.append(message.sequence)
        running.set()
        await asyncio.wait_for(release.wait(), 10)

    policy = DeliveryPolicy(prefetch=8, workers=1, heartbeats=heartbeats)
    consumer = _consumer(batches, handler, policy, leases)
    originals = [_Raw(1), _Raw(2)]
    copies = [_Raw(1), _Raw(2)]
    consumer.start()
    try:
        batches.put_nowait(originals)
        await asyncio.wait_for(running.wait(), 10)
        batches.put_nowait(copies)
        for _ in range(1000):  # bounded: the copies are taken in within a few loop passes
            if consumer.stats().duplicates == 2:
                break
            await asyncio.sleep(0.01)
        release.set()
        for _ in range(1000):
            if consumer.stats().acked == 2:
                break
            await asyncio.sleep(0.01)
    finally:
        release.set()
        await consumer.cancel(5)
    assert handled == [1, 2]
    assert [raw.acks for raw in originals + copies] == [1, 1, 0, 0]
    stats = consumer.stats()
    assert (stats.acked, stats.duplicates, stats.delivered) == (2, 2, 2)
