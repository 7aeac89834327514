"""Store and forward: a bus with a store and a transport keeps accepting publishes while the
broker is unreachable (a real partition, through the chaos proxy) and forwards them in order,
once, when it heals; bounded by max_pending; a crash during forwarding does not double an
event at the broker (counted in the stream itself with a plain nats-py client)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import psycopg
import pytest
from psycopg import sql

import tidings
from tidings import (
    Bus,
    ForwardingStatistics,
    PostgresStore,
    PublishError,
    SQLiteStore,
    StoreAndForward,
)
from tidings.chaos import FaultProxy
from tidings.exceptions import EncodeError
from tidings.forwarding import backlog
from tidings.testing.nats_server import NatsServer
from tidings.transports.base import PublishAck
from tidings.transports.nats import NatsTransport, StreamSettings


@tidings.event("fwd.tick")
@dataclass(frozen=True)
class Tick:
    n: int


@pytest.fixture
def server() -> Iterator[NatsServer]:
    with NatsServer(name="fwd") as started:
        yield started


def _transport(url: str, **options: object) -> NatsTransport:
    return NatsTransport(
        url,
        prefix="fwd",
        stream=StreamSettings(name="FWD"),
        publish_timeout=math.inf,
        ack_timeout=0.5,
        connect_timeout=10.0,
        **options,  # type: ignore[arg-type]
    )


async def _stored(url: str) -> list[int]:
    """The event numbers stored in the stream, in stream order."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        count = (await js.stream_info("FWD")).state.messages
        sub = await js.subscribe("fwd.fwd.tick", stream="FWD", ordered_consumer=True)
        numbers = []
        for _ in range(count):
            msg = await sub.next_msg(timeout=10)
            numbers.append(int(msg.data.split(b'"n":')[1].rstrip(b"}")))
        return numbers
    finally:
        await nc.close()


async def _backlog(path: Path) -> int:
    store = SQLiteStore(path)
    try:
        return await backlog(store)
    finally:
        await store.aclose()


@contextlib.asynccontextmanager
async def _restarted(db: Path, url: str) -> AsyncIterator[Bus]:
    """A forwarding bus started again on the log ``db``, once it forwarded its backlog."""
    bus = Bus(
        store=SQLiteStore(db),
        transport=_transport(url),
        forward=StoreAndForward(checkpoint_interval=0.1),
    )
    async with bus:
        await _until(lambda: _pending(bus) == 0)
        yield bus


def _statistics(bus: Bus) -> ForwardingStatistics:
    stats = bus.statistics().forwarding
    assert stats is not None
    return stats


def _pending(bus: Bus) -> int:
    return _statistics(bus).pending


async def _until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"not within {timeout}s")
        await asyncio.sleep(0.05)


async def test_publishes_during_a_partition_are_forwarded_in_order_once(
    server: NatsServer, tmp_path: Path
) -> None:
    async with FaultProxy(("127.0.0.1", server.port)) as proxy:
        bus = Bus(
            store=SQLiteStore(tmp_path / "outbox.db"),
            transport=_transport(f"nats://{proxy.address}"),
            forward=StoreAndForward(checkpoint_interval=0.1),
        )
        async with bus:
            for n in range(50):
                bus.publish(Tick(n))
            await _until(lambda: _pending(bus) == 0)
            proxy.partition("both")
            for n in range(50, 150):
                bus.publish(Tick(n))  # accepted into the log: no error
            await asyncio.sleep(1.0)
            assert _pending(bus) == 100
            proxy.heal()
            await _until(lambda: _pending(bus) == 0)
    assert await _stored(server.url) == list(range(150))


async def test_max_pending_refuses_with_publish_error(server: NatsServer, tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "outbox.db")
    async with FaultProxy(("127.0.0.1", server.port)) as proxy:
        bus = Bus(
            store=store,
            transport=_transport(f"nats://{proxy.address}"),
            forward=StoreAndForward(max_pending=10),
        )
        async with bus:
            proxy.partition("both")
            for n in range(10):
                bus.publish(Tick(n))
            with pytest.raises(PublishError, match="max_pending"):
                bus.publish(Tick(10))
            assert len(await store.read()) == 10  # the refused one is not in the log
            proxy.heal()
            await _until(lambda: _pending(bus) == 0)
            bus.publish(Tick(11))
    await asyncio.sleep(0)
    assert sorted(await _stored(server.url)) == [*range(10), 11]


def test_forward_needs_store_transport_and_patient_publishes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs both store= and transport="):
        Bus(store=SQLiteStore(tmp_path / "a.db"), forward=StoreAndForward())
    with pytest.raises(ValueError, match=r"publish_timeout=math\.inf"):
        Bus(
            store=SQLiteStore(tmp_path / "b.db"),
            transport=NatsTransport("nats://127.0.0.1:1"),
            forward=StoreAndForward(),
        )
    with pytest.raises(ValueError, match="overflow"):
        StoreAndForward(overflow="block")  # type: ignore[arg-type]


_CRASHING_PUBLISHER = textwrap.dedent(
    """
    import asyncio, math, os, signal, sys
    from dataclasses import dataclass
    import tidings
    from tidings import Bus, SQLiteStore, StoreAndForward
    from tidings.transports.nats import NatsTransport, StreamSettings

    @tidings.event("fwd.tick")
    @dataclass(frozen=True)
    class Tick:
        n: int

    async def main():
        transport = NatsTransport(sys.argv[1], prefix="fwd", stream=StreamSettings(name="FWD"),
                                  publish_timeout=math.inf)
        bus = Bus(store=SQLiteStore(sys.argv[2]), transport=transport,
                  forward=StoreAndForward(checkpoint_interval=3600))
        await bus.start()
        for n in range(100):
            bus.publish(Tick(n))
        while bus.statistics().forwarding.pending:
            await asyncio.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)  # acked by the broker, checkpoint not committed

    asyncio.run(main())
    """
)


async def test_a_crash_during_forwarding_does_not_double(
    server: NatsServer, tmp_path: Path
) -> None:
    db = tmp_path / "outbox.db"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CRASHING_PUBLISHER, server.url, str(db)
    )
    assert await asyncio.wait_for(process.wait(), 60) == -signal.SIGKILL
    assert await _stored(server.url) == list(range(100))
    # A new bus on the same log re-sends all 100 (no checkpoint); the broker drops them.
    async with _restarted(db, server.url) as bus:
        bus.publish(Tick(100))
    assert await _stored(server.url) == list(range(101))


async def test_drop_newest_refuses_silently_counts_and_dead_letters(
    server: NatsServer, tmp_path: Path
) -> None:
    store = SQLiteStore(tmp_path / "outbox.db")
    letters: list[tidings.DeadLetter] = []
    async with FaultProxy(("127.0.0.1", server.port)) as proxy:
        bus = Bus(
            store=store,
            transport=_transport(f"nats://{proxy.address}"),
            forward=StoreAndForward(max_pending=5, overflow="drop_newest"),
        )
        bus.subscribe(tidings.DeadLetter, letters.append)
        async with bus:
            proxy.partition("both")
            for n in range(8):
                bus.publish(Tick(n))  # no error: the last three are refused quietly
            assert [record.envelope.payload.n for record in await store.read()] == [0, 1, 2, 3, 4]
            assert [letter.envelope.payload.n for letter in letters] == [5, 6, 7]
            assert all(letter.handler == "tidings.publish" for letter in letters)
            proxy.heal()
            await _until(lambda: _pending(bus) == 0)
    assert await _stored(server.url) == [0, 1, 2, 3, 4]


async def test_closing_during_a_partition_keeps_the_backlog_for_the_next_start(
    server: NatsServer, tmp_path: Path
) -> None:
    db = tmp_path / "outbox.db"
    letters: list[tidings.DeadLetter] = []
    async with FaultProxy(("127.0.0.1", server.port)) as proxy:
        bus = Bus(
            store=SQLiteStore(db),
            transport=_transport(f"nats://{proxy.address}"),
            forward=StoreAndForward(checkpoint_interval=0.1),
        )
        bus.subscribe(tidings.DeadLetter, letters.append)
        async with bus:
            for n in range(20):
                bus.publish(Tick(n))
            await _until(lambda: _pending(bus) == 0)
            await _until(lambda: _statistics(bus).checkpoint == 20)  # the checkpoint passes them
            proxy.partition("both")
            for n in range(20, 50):
                bus.publish(Tick(n))
            await bus.aclose(timeout=1.0)
        assert letters == []  # not reported as lost: they are in the log
        assert await _backlog(db) == 30
    assert await _stored(server.url) == list(range(20))
    async with _restarted(db, server.url):
        pass
    assert await _stored(server.url) == list(range(50))
    assert await _backlog(db) == 0


async def test_records_another_writer_appended_are_forwarded_within_max_pending(
    server: NatsServer, tmp_path: Path
) -> None:
    db = tmp_path / "outbox.db"
    async with FaultProxy(("127.0.0.1", server.port)) as proxy:
        bus = Bus(
            store=SQLiteStore(db),
            transport=_transport(f"nats://{proxy.address}"),
            forward=StoreAndForward(max_pending=8, checkpoint_interval=0.1),
        )
        async with bus:
            for n in range(5):
                bus.publish(Tick(n))
            await _until(lambda: _pending(bus) == 0)
            with Bus(store=SQLiteStore(db)) as writer:  # another writer of the same log
                for n in range(5, 10):
                    writer.publish(Tick(n))
            for n in range(10, 15):
                bus.publish(Tick(n))
            await _until(lambda: _statistics(bus).checkpoint == 15)
            stats = _statistics(bus)
            assert (stats.pending, stats.forwarded, stats.found) == (0, 15, 5)
            proxy.partition("both")
            with Bus(store=SQLiteStore(db)) as writer:
                for n in range(15, 35):
                    writer.publish(Tick(n))
            await _until(lambda: _statistics(bus).found == 5 + 8)
            await asyncio.sleep(0.5)  # more checkpoint passes: no more than max_pending wait
            stats = _statistics(bus)
            assert (stats.pending, stats.found, stats.checkpoint) == (8, 13, 15)
            proxy.heal()
            await _until(lambda: _statistics(bus).checkpoint == 35)
            stats = _statistics(bus)
            assert (stats.pending, stats.forwarded, stats.found) == (0, 35, 25)
    stored = await _stored(server.url)
    assert sorted(stored) == list(range(35))  # each once
    assert [n for n in stored if 5 <= n < 10] == list(range(5, 10))  # in log order
    assert [n for n in stored if n >= 15] == list(range(15, 35))
    assert await _backlog(db) == 0


@pytest.fixture
def postgres_store(postgres_url: str, postgres_schema: str) -> tuple[PostgresStore, sql.Identifier]:
    """A PostgreSQL store in a schema of its own (dropped afterwards), and its events table."""
    store = PostgresStore(postgres_url, schema=postgres_schema)
    return store, sql.Identifier(postgres_schema, "tidings_events")


async def test_a_deferred_append_that_fails_is_released_and_dead_lettered(
    server: NatsServer, postgres_url: str, postgres_store: tuple[PostgresStore, sql.Identifier]
) -> None:
    store, events = postgres_store
    letters: list[tidings.DeadLetter] = []
    bus = Bus(
        store=store,
        transport=_transport(server.url),
        forward=StoreAndForward(max_pending=3, checkpoint_interval=0.1),
    )
    bus.subscribe(tidings.DeadLetter, letters.append)
    async with bus:
        bus.publish(Tick(0))
        await _until(lambda: _statistics(bus).forwarded == 1)
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
            # The database refuses these events from now on: a real constraint violation.
            await conn.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT no_poison CHECK (topic <> {})").format(
                    events, sql.Literal("fwd.poison")
                )
            )
        for n in range(3):  # on the loop's thread: each append deferred, publish returns
            bus.publish(Tick(n), topic="fwd.poison")
        await bus.flush()  # the appends failed
        stats = _statistics(bus)
        assert (stats.pending, stats.failed) == (0, 3)
        assert [letter.handler for letter in letters] == ["tidings.publish"] * 3
        assert all("append to the log failed" in str(letter.error) for letter in letters)
        for n in range(1, 4):  # room again: max_pending counts only what waits
            bus.publish(Tick(n))
        await _until(lambda: _statistics(bus).checkpoint == 4)
    assert await _stored(server.url) == [0, 1, 2, 3]


async def _refused_between_two_ticks(
    db: Path, transport: NatsTransport, topic: str, payload: dict[str, str]
) -> None:
    """Forward ``Tick(0)``, another writer's ``payload`` on ``topic`` (which ``transport``
    or its broker refuses) and ``Tick(1)`` from the log ``db``: the refused record is
    settled (counted, dead-lettered) and passed; both ticks are forwarded."""
    letters: list[tidings.DeadLetter] = []
    bus = Bus(
        store=SQLiteStore(db), transport=transport, forward=StoreAndForward(checkpoint_interval=0.1)
    )
    bus.subscribe(tidings.DeadLetter, letters.append)
    async with bus:
        bus.publish(Tick(0))
        with Bus(store=SQLiteStore(db)) as writer:  # another writer of the same log
            writer.publish(payload, topic=topic)
        bus.publish(Tick(1))
        await _until(lambda: _statistics(bus).checkpoint == 3)
        stats = _statistics(bus)
        assert (stats.pending, stats.forwarded, stats.refused, stats.found) == (0, 2, 1, 1)
        assert [letter.envelope.topic for letter in letters] == [topic]


async def test_a_record_the_broker_cannot_take_is_settled_and_passed(
    server: NatsServer, tmp_path: Path
) -> None:
    # another writer's event above max_payload
    await _refused_between_two_ticks(
        tmp_path / "outbox.db", _transport(server.url), "fwd.big", {"blob": "x" * 2_000_000}
    )
    assert await _stored(server.url) == [0, 1]


class _RefusingTransport(NatsTransport):
    """A NATS transport that cannot send events on ``fwd.unsendable`` (say, a payload it
    cannot encode): its ``send`` raises before anything leaves."""

    async def send(self, envelope: tidings.Envelope[object]) -> asyncio.Future[PublishAck]:
        if envelope.topic == "fwd.unsendable":
            raise EncodeError("cannot encode this payload", type_=dict)
        return await super().send(envelope)


async def test_a_record_the_transport_cannot_send_is_settled_and_passed(
    server: NatsServer, tmp_path: Path
) -> None:
    transport = _RefusingTransport(
        server.url, prefix="fwd", stream=StreamSettings(name="FWD"), publish_timeout=math.inf
    )
    await _refused_between_two_ticks(
        tmp_path / "outbox.db", transport, "fwd.unsendable", {"any": "thing"}
    )
    assert await _stored(server.url) == [0, 1]
