"""Group commit in Gateway.accept: concurrent calls share one append, each is answered only
once its own events are durable, and a failure is exactly each call's own."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest

import tidings
from tidings.event import Envelope
from tidings.exceptions import EncodeError, StoreError
from tidings.gateway import Gateway, parse_config
from tidings.gateway.runner import EventIdConflictError
from tidings.store import EventStore, SQLiteStore

CONFIG = "routes: [{name: all, from: orders.>, to: [{topic: audit.orders}]}]\n"
QUIET = "routes: [{name: elsewhere, from: elsewhere.>, to: [{topic: audit.x}]}]\n"
"""Routes none of these events: the only appends are the gateway's intake."""


class CountingStore(SQLiteStore):
    """A real SQLite store that counts the append calls made on it."""

    appends = 0

    async def append(self, envelopes: Iterable[Envelope[Any]], **options: Any) -> list[int]:
        self.appends += 1
        return await super().append(envelopes, **options)


def event(n: int, source: str = "test", data: Any = None) -> Envelope[Any]:
    payload = {"n": n} if data is None else data
    return Envelope("orders.placed", payload, 1_000_000 + n, source=source, _id=f"e{n}")


async def stored_ids(store: EventStore) -> list[str]:
    return [r.envelope.id for r in await store.read(after=0, topic="orders.>", unknown="raw")]


@contextlib.asynccontextmanager
async def running_gateway(store: EventStore | str, config: str = CONFIG) -> AsyncIterator[Gateway]:
    """A started gateway with ``config`` on a bus over ``store``, stopped at the end (5 s to
    drain) unless the block raised."""
    async with tidings.Bus(store=store) as bus:
        gateway = Gateway(bus, parse_config([("g.yaml", config)]))
        await gateway.start()
        yield gateway
        await gateway.stop(5)


async def test_concurrent_accepts_share_one_append_and_each_gets_its_own_durable_positions(
    tmp_path: Path,
) -> None:
    store = CountingStore(tmp_path / "e.db")
    async with running_gateway(store, QUIET) as gateway:
        before = store.appends

        async def call(c: int) -> None:
            envelopes = [event(c * 10 + i) for i in range(3)]
            positions = await gateway.accept(envelopes)
            # Durable when answered: the log holds exactly this call's events there.
            records = [(await store.read(after=p - 1, upto=p, unknown="raw"))[0] for p in positions]
            assert [r.envelope.id for r in records] == [e.id for e in envelopes]

        await asyncio.wait_for(asyncio.gather(*(call(c) for c in range(20))), 10)
        assert store.appends - before == 1  # 20 calls, one grouped append
        assert sorted(await stored_ids(store)) == sorted(
            f"e{c * 10 + i}" for c in range(20) for i in range(3)
        )
        assert gateway.accepted == 60
        assert await gateway.wait_routed(await store.last_position(), 10)
        assert gateway.routed == 60


async def test_an_id_in_two_concurrent_calls_is_stored_once_and_a_foreign_source_refused(
    tmp_path: Path,
) -> None:
    async with running_gateway(f"sqlite:///{tmp_path}/e.db") as gateway:
        first, retry, foreign = await asyncio.wait_for(
            asyncio.gather(
                gateway.accept([event(1), event(2)]),
                gateway.accept([event(2)]),  # a retry of e2, same source
                gateway.accept([event(1, source="other")]),
                return_exceptions=True,
            ),
            10,
        )
        assert first == [1, 2]
        assert retry == [2]
        assert isinstance(foreign, EventIdConflictError)
        assert foreign.conflicts == [("e1", "other", "test")]
        assert foreign.accepted == []
        assert gateway.bus.store is not None
        assert await stored_ids(gateway.bus.store) == ["e1", "e2"]
        assert gateway.accepted == 3  # e1, e2, and the retried e2


async def test_a_call_whose_events_the_store_refuses_fails_alone(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "e.db")
    async with running_gateway(store) as gateway:
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                gateway.accept([event(1)]),
                gateway.accept([event(2, data={"bad": object()})]),  # cannot be encoded
                gateway.accept([event(3), event(4)]),
                return_exceptions=True,
            ),
            10,
        )
        assert outcomes[0] == [1]
        assert isinstance(outcomes[1], EncodeError)
        assert outcomes[2] == [2, 3]
        assert await stored_ids(store) == ["e1", "e3", "e4"]
        assert gateway.accepted == 3


async def test_a_failed_shared_append_fails_every_call_of_the_group_and_stores_none(
    tmp_path: Path,
) -> None:
    path = tmp_path / "e.db"
    store = SQLiteStore(path, busy_timeout=0.2)
    async with running_gateway(store) as gateway:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
        try:
            outcomes = await asyncio.wait_for(
                asyncio.gather(
                    *(gateway.accept([event(c * 10 + i) for i in range(2)]) for c in range(5)),
                    return_exceptions=True,
                ),
                30,
            )
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert [type(o) for o in outcomes] == [type(outcomes[0])] * 5
        assert all(isinstance(o, StoreError) for o in outcomes)
        assert await stored_ids(store) == []
        assert gateway.accepted == 0
        # The lock released, the same calls (retried) are taken.
        retried = await gateway.accept([event(1), event(2)])
        assert retried == [1, 2]


@pytest.mark.parametrize("calls", [1, 7])
async def test_accept_returns_after_stop_cancels_the_appender(tmp_path: Path, calls: int) -> None:
    async with tidings.Bus(store=f"sqlite:///{tmp_path}/e.db") as bus:
        gateway = Gateway(bus, parse_config([("g.yaml", CONFIG)]))
        await gateway.start()
        results = await asyncio.wait_for(
            asyncio.gather(*(gateway.accept([event(c)]) for c in range(calls))), 10
        )
        assert sorted(p for r in results for p in r) == list(range(1, calls + 1))
        assert await gateway.stop(5)


async def test_the_topic_targets_of_one_accepted_batch_are_appended_together(
    tmp_path: Path,
) -> None:
    store = CountingStore(tmp_path / "e.db")
    async with running_gateway(store) as gateway:
        seen: list[int] = []

        @gateway.bus.on("audit.orders")
        def audit(envelope: Envelope[Any]) -> None:  # dispatched after the shared append
            seen.append(envelope.payload["n"])

        positions = await gateway.accept([event(n) for n in range(100)])
        before = store.appends
        assert await gateway.wait_routed(max(positions), 10)
        # 100 routed events, 100 topic targets: a few shared appends, not one each.
        assert store.appends - before <= 3
        targets = await store.read(after=0, topic="audit.orders", unknown="raw")
        assert [r.envelope.payload["n"] for r in targets] == list(range(100))
        assert seen == list(range(100))
        assert gateway.sender.outcomes[("topic", "delivered")] == 100


async def test_more_dispatches_than_may_be_in_flight_wait_for_room_and_each_is_sent_once(
    tmp_path: Path,
) -> None:
    store = CountingStore(tmp_path / "e.db")
    async with running_gateway(store) as gateway:
        positions = await gateway.accept([event(n) for n in range(600)])
        before = store.appends
        assert await gateway.wait_routed(max(positions), 20)
        # at most 256 dispatches in flight: the follower waited for room twice at least
        assert store.appends - before >= 3
        targets = await store.read(after=0, topic="audit.orders", unknown="raw")
        assert [r.envelope.payload["n"] for r in targets] == list(range(600))
        assert gateway.sender.outcomes[("topic", "delivered")] == 600
        figures = gateway.stats.snapshot(["all"])["routes"][0]
        assert (figures["events"], figures["errors"]) == (600, 0)
