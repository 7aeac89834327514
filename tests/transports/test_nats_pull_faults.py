"""Faults on the pulling side: a message stored on a tidings subject that looks like a
JetStream status reply (empty body, a ``Status`` header) is an event like any other, never
stalling, reordering or exhausting the good events around it; and deliveries nak'd unseen
after a reconnect never count toward ``max_deliver``."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import nats
import pytest

from tidings.clock import HybridClock
from tidings.testing.nats_server import NatsServer
from tidings.testing.transport_conformance import Collector, DeadLetters, make_envelope
from tidings.transports import DeliveryPolicy
from tidings.transports.nats import NatsTransport, StreamSettings

Factory = Callable[..., NatsTransport]


async def test_status_headers_on_stream_messages_are_not_status_replies(
    nats_factory: Factory, nats_server: NatsServer
) -> None:
    prefix, good_count = "poison", 300
    transport = nats_factory(prefix=prefix, stream=StreamSettings(name="POISON"))
    async with transport:
        got = Collector()
        policy = DeliveryPolicy(max_deliver=3, ack_wait=5.0, backoff=0.1)
        sub = await transport.subscribe("conformance.>", got, policy=policy)
        dead = DeadLetters()
        await transport.subscribe_dead_letters(dead)
        raw = await nats.connect(nats_server.url)
        clock = HybridClock()
        good: list[str] = []
        try:
            js = raw.jetstream()
            for n in range(good_count):
                env = make_envelope(clock, f"good-{n}", key=f"k{n % 5}")
                good.append(env.id)
                await transport.send(env)
                if n == 100:  # a forged "no responders", stored in the stream
                    await js.publish(f"{prefix}.conformance.order", b"", headers={"Status": "503"})
                if n == 200:  # a forged idle heartbeat
                    await js.publish(f"{prefix}.conformance.order", b"", headers={"Status": "100"})
            assert await transport.flush(30) == 0
        finally:
            await raw.close()
        await got.wait_for(lambda: set(got.ids) >= set(good), timeout=30)
        await dead.wait_count(2, timeout=20)
        # Every good event was handled once, at its first delivery: none nak'd back unseen.
        assert Counter(got.ids) == Counter(good)
        assert [m.attempt for m in got.messages] == [1] * good_count
        stats = sub.stats()
        # No good event dead-lettered (as exhausted, or at all): only the two forged ones.
        assert (stats.delivered, stats.acked, stats.retried) == (good_count + 2, good_count, 0)
        assert (stats.dead_lettered, stats.decode_errors) == (2, 2)
        # The two forged messages are undecodable events, dead-lettered as such.
        assert sorted(r.headers.get("Status", "") for r in dead.records) == ["100", "503"]
        for record in dead.records:
            assert record.handler == "tidings.decode"
            assert record.body == b""
            assert record.attempts == 1


class _CuttableProxy:
    """A loopback TCP proxy to a server whose connections can all be cut at once."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> _CuttableProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        self._writers += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        """Close every proxied connection, both ways."""
        for writer in self._writers:
            writer.close()
        self._writers.clear()


async def _wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() >= deadline:
            raise TimeoutError(f"not within {timeout}s")
        await asyncio.sleep(0.01)


async def test_deliveries_given_back_unseen_after_a_reconnect_do_not_exhaust_an_event(
    nats_factory: Factory, nats_server: NatsServer
) -> None:
    """A connection cut (the server lives on): the pull request of the old inbox lingers,
    the events it brings are nak'd unseen; with max_deliver=1 each must still reach the
    handler, never the dead letters as exhausted."""
    options: dict[str, Any] = {"prefix": "cut", "stream": StreamSettings(name="CUT")}
    async with _CuttableProxy(nats_server.port) as proxy:
        consumer = NatsTransport(f"nats://127.0.0.1:{proxy.port}", **options)
        publisher = nats_factory(**options)
        async with consumer, publisher:
            got = Collector()
            policy = DeliveryPolicy(max_deliver=1, ack_wait=10.0)
            sub = await consumer.subscribe("conformance.>", got, policy=policy)
            clock = HybridClock()
            await publisher.publish(make_envelope(clock, "before"))
            await got.wait_count(1, timeout=10)
            proxy.cut()
            await _wait_until(lambda: not consumer.connected, 10)
            await _wait_until(lambda: consumer.connected, 10)
            sent = [make_envelope(clock, f"after-{n}") for n in range(20)]
            for env in sent:
                await publisher.publish(env)
            await got.wait_for(lambda: set(got.ids) >= {e.id for e in sent}, timeout=20)
            stats = sub.stats()
    assert Counter(got.ids[1:]) == Counter(e.id for e in sent)
    assert (stats.acked, stats.dead_lettered) == (21, 0)


@pytest.mark.slow
async def test_a_pull_request_made_while_the_server_is_down_is_not_taken_for_a_stale_one(
    own_server: NatsServer,
) -> None:
    """The server SIGKILLed and down longer than a pull request lives, so the consumer asks
    again while disconnected, then restarted: each key's events are first delivered in
    publish order, none given back unseen (as if from a request of the old connection)."""
    transport = NatsTransport(own_server.url, prefix="down", stream=StreamSettings(name="DOWN"))
    clock = HybridClock()
    got = Collector()
    async with transport:
        await transport.subscribe("conformance.>", got, policy=DeliveryPolicy(ack_wait=10.0))
        await transport.publish(make_envelope(clock, "before"))
        await got.wait_count(1, timeout=10)
        own_server.kill()
        await _wait_until(lambda: not transport.connected, 10)
        # The fault lasts longer than a pull request (5 s expiry, 2 s grace): no event to
        # await, the subscription's next request is made while the server is down.
        await asyncio.sleep(8)
        await asyncio.to_thread(own_server.restart)
        await _wait_until(lambda: transport.connected, 30)
        sent = [make_envelope(clock, f"after-{n}", key="k") for n in range(40)]
        for env in sent:
            await transport.send(env)
        assert await transport.flush(30) == 0
        await got.wait_for(lambda: set(got.ids) >= {e.id for e in sent}, timeout=30)
    assert list(dict.fromkeys(got.ids[1:])) == [e.id for e in sent]
    assert [m.attempt for m in got.messages[1:]] == [1] * len(sent)
