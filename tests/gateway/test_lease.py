"""The routing lease: one holder at a time per log and consumer, taken over on release."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tidings.gateway.lease import RoutingLease, routing_lease
from tidings.store import MemoryStore, SQLiteStore


def held(lease: RoutingLease) -> bool:
    return lease.held


async def test_a_sqlite_lease_has_one_holder_and_passes_on_release(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "events.db") as store:
        first, second = routing_lease(store, "gw"), routing_lease(store, "gw")
        other = routing_lease(store, "another-consumer")
        await first.acquire()
        await other.acquire()  # another consumer name: no conflict
        waiting = asyncio.create_task(second.acquire())
        await asyncio.sleep(0.6)  # two retry intervals: still refused
        assert not waiting.done()
        assert not held(second)
        await first.release()
        await asyncio.wait_for(waiting, 10)
        assert held(second)
        assert not first.held
        await second.release()
        await other.release()


async def test_a_one_process_store_always_grants_the_lease() -> None:
    store = MemoryStore()
    first, second = routing_lease(store, "gw"), routing_lease(store, "gw")
    await first.acquire()
    await asyncio.wait_for(second.acquire(), 1)
    assert first.held
    assert second.held
