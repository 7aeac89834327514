"""Waiting for a bridge's events to be in the bus's log, for the tests that a broker gone
mid-run loses nothing: the log has no event to await, so it is read every 50 ms."""

from __future__ import annotations

import asyncio

from tidings.store import EventStore, StoredEvent

__all__ = ("until_stored",)


async def until_stored(
    store: EventStore, topic: str, count: int, timeout: float
) -> list[StoredEvent]:
    """The records of ``topic`` once the log holds at least ``count`` of them.

    Raises:
        TimeoutError: it did not within ``timeout`` seconds.
    """
    async with asyncio.timeout(timeout):
        while len(records := await store.read(topic=topic)) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # the log has no event to await
    return records
