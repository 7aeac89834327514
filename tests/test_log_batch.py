"""Bus.appending_together: publishes on the loop's thread appended in one transaction, on a
synchronous store too, dispatched after it in publish order; each append error reported."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import tidings
from tidings.event import Envelope
from tidings.exceptions import EncodeError
from tidings.store import SQLiteStore
from tidings.transports.nats import NatsTransport


class CountingStore(SQLiteStore):
    appends = 0

    async def append(self, envelopes: Iterable[Envelope[Any]], **options: Any) -> list[int]:
        self.appends += 1
        return await super().append(envelopes, **options)

    def append_sync(self, envelopes: Iterable[Envelope[Any]], **options: Any) -> list[int]:
        self.appends += 1
        return super().append_sync(envelopes, **options)


async def test_publishes_in_a_batch_share_one_append_and_are_dispatched_after_it(
    tmp_path: Path,
) -> None:
    store = CountingStore(tmp_path / "e.db")
    async with tidings.Bus(store=store) as bus:
        seen: list[int] = []
        bus.subscribe("t.x", lambda n: seen.append(n))
        batch = bus.appending_together()
        assert batch is not None
        with batch:
            for n in range(50):
                bus.publish(n, topic="t.x")
            assert seen == []  # dispatched only once appended
        assert await batch.wait() == [None] * 50
        assert store.appends == 1
        assert seen == list(range(50))
        assert [r.envelope.payload for r in await store.read()] == list(range(50))
        bus.publish(50, topic="t.x")  # outside a batch: appended at once, as always
        assert store.appends == 2
        assert seen == list(range(51))


async def test_an_event_that_cannot_be_appended_fails_alone_and_is_not_dispatched(
    tmp_path: Path,
) -> None:
    async with tidings.Bus(store=f"sqlite:///{tmp_path}/e.db") as bus:
        seen: list[Any] = []
        bus.subscribe("t.>", seen.append)
        batch = bus.appending_together()
        assert batch is not None
        with batch:
            bus.publish(1, topic="t.a")
            bus.publish(object(), topic="t.b")  # no JSON for it
            bus.publish(3, topic="t.c")
        first, bad, third = await batch.wait()
        assert first is None
        assert isinstance(bad, EncodeError)
        assert third is None
        assert seen == [1, 3]


def test_a_bus_without_a_log_or_with_a_transport_has_no_batches(tmp_path: Path) -> None:
    assert tidings.Bus().appending_together() is None
    bus = tidings.Bus(store="memory://", transport=NatsTransport("nats://127.0.0.1:1"))
    assert bus.appending_together() is None
