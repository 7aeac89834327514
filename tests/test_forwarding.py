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
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest

import tidings
from tidings import Bus, PublishError, SQLiteStore, StoreAndForward
from tidings.chaos import FaultProxy
from tidings.forwarding import backlog
from tidings.testing.nats_server import NatsServer
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
        await _until(lambda: bus._carrier.outstanding == 0)  # type: ignore[union-attr]
        yield bus


async def _until(predicate: object, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
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
            await _until(lambda: bus._carrier.outstanding == 0)  # type: ignore[union-attr]
            proxy.partition("both")
            for n in range(50, 150):
                bus.publish(Tick(n))  # accepted into the log: no error
            await asyncio.sleep(1.0)
            assert bus._carrier.outstanding == 100  # type: ignore[union-attr]
            proxy.heal()
            await _until(lambda: bus._carrier.outstanding == 0)  # type: ignore[union-attr]
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
            await _until(lambda: bus._carrier.outstanding == 0)  # type: ignore[union-attr]
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
        while bus._carrier.outstanding:
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
            await _until(lambda: bus._carrier.outstanding == 0)  # type: ignore[union-attr]
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
            await _until(lambda: bus._carrier.outstanding == 0)  # type: ignore[union-attr]
            await asyncio.sleep(0.3)  # the checkpoint passes them
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
