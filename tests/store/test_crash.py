"""Crash safety: a writer killed with SIGKILL loses no append that had returned."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from tidings.store import open_store
from tidings.testing.store_conformance import placed

StartWriter = Callable[[str, str, int, int, float], Awaitable[asyncio.subprocess.Process]]


async def test_appends_that_returned_survive_sigkill(
    store_url: str, start_writer: StartWriter
) -> None:
    async with open_store(store_url) as store:
        await store.last_position()  # create the log before the writer starts
    child = await start_writer(store_url, "crash", 1_000_000, 7, 60)
    assert child.stdout is not None
    reported: dict[str, int] = {}
    while len(reported) < 1_000:
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        assert line, "the writer stopped before it was killed"
        position, event_id = line.decode().split()
        reported[event_id] = int(position)
    child.send_signal(signal.SIGKILL)
    await asyncio.wait_for(child.wait(), 30)
    assert child.returncode == -signal.SIGKILL

    async with open_store(store_url) as store:
        assert await store.verify() is None
        records = await store.read(unknown="raw")
        assert [r.position for r in records] == list(range(1, len(records) + 1))
        stored = {r.id: r.position for r in records}
        lost = {i: p for i, p in reported.items() if stored.get(i) != p}
        assert not lost
        assert len(records) >= len(reported)
        # The log goes on from where the killed writer left it.
        assert await store.append(placed(1)) == [len(records) + 1]
        assert await store.verify() is None
