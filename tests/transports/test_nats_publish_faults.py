"""Publishing through a killed and restarted nats-server: publish order per key holds, and a
publish error means exactly what it says (counted in the stream itself, read back with a
plain nats-py client)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats
import nats.errors
import nats.js.errors
import pytest

from tidings.clock import HybridClock
from tidings.event import Envelope
from tidings.exceptions import PublishError, PublishOutcomeUnknownError
from tidings.testing.nats_server import NatsCluster, NatsServer
from tidings.testing.transport_conformance import Collector, ConformanceOrder, make_envelope
from tidings.transports import DeliveryPolicy, PublishAck
from tidings.transports.nats import NatsTransport

from .outage_transports import outage_transport

pytestmark = pytest.mark.slow

KEYS = 20
T = TypeVar("T")


async def _patiently(call: Callable[[], Awaitable[T]], seconds: float = 30.0) -> T:
    """``call()``, retried while a (re-electing, loaded) cluster times out or is unavailable,
    for at most ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            return await call()
        except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _stored_ids(url: str | list[str], stream: str, subject: str) -> list[str]:
    """The ``Nats-Msg-Id`` of every message of ``stream`` on ``subject``, in stream order."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        count = (await _patiently(lambda: js.stream_info(stream))).state.messages
        sub = await _patiently(lambda: js.subscribe(subject, stream=stream, ordered_consumer=True))
        ids = []
        for _ in range(count):
            msg = await sub.next_msg(timeout=10)
            ids.append((msg.headers or {}).get("Nats-Msg-Id", "?"))
        return ids
    finally:
        await nc.close()


def _inversions(numbers: list[int]) -> int:
    """Events that come after a later event of their key (key = number % KEYS)."""
    highest: dict[int, int] = {}
    late = 0
    for n in numbers:
        key = n % KEYS
        if highest.get(key, -1) > n:
            late += 1
        else:
            highest[key] = n
    return late


async def _wait_connected(transport: NatsTransport, connected: bool, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while transport.connected != connected:
        if loop.time() >= deadline:
            raise TimeoutError(f"connected is not {connected} within {timeout}s")
        await asyncio.sleep(0.01)


async def test_publish_order_per_key_holds_through_a_server_kill(own_server: NatsServer) -> None:
    """SIGKILL mid-stream with publishes pipelined, restart: every event stored once, in
    publish order per key, and first delivered in that order."""
    count, kill_at = 3_000, 1_000
    publisher = outage_transport(own_server.url, "ORDERED")
    consumer = outage_transport(own_server.url, "ORDERED")
    async with publisher, consumer:
        got = Collector()
        await consumer.subscribe("conformance.>", got, policy=DeliveryPolicy(ack_wait=10.0))
        clock = HybridClock()
        number: dict[str, int] = {}
        futures: list[asyncio.Future[PublishAck]] = []
        killed: asyncio.Future[None] | None = None
        for n in range(count):
            env = make_envelope(clock, f"o-{n}", key=f"k{n % KEYS}")
            number[env.id] = n
            futures.append(await publisher.send(env))
            if n == kill_at:
                own_server.kill()
                killed = asyncio.ensure_future(asyncio.to_thread(own_server.restart))
            if n % 20 == 0:
                await asyncio.sleep(0.002)  # ~1,000 events/s, as an application would
        assert killed is not None
        await asyncio.wait_for(killed, 30)
        assert await publisher.flush(60) == 0
        acks = [future.result() for future in futures]
        stored = await _stored_ids(own_server.url, "ORDERED", "ordered.>")
        await got.wait_for(lambda: len(set(got.ids)) >= count, timeout=60)
    assert len(acks) == count
    assert len(stored) == count  # none lost, none stored twice
    assert set(stored) == set(number)
    assert _inversions([number[i] for i in stored]) == 0
    first: dict[str, int] = {}
    for event_id in got.ids:
        first.setdefault(event_id, number[event_id])
    assert len(first) == count
    assert _inversions(list(first.values())) == 0


async def test_publish_order_per_key_holds_through_a_stream_leader_failover(
    cluster: NatsCluster,
) -> None:
    """The stream leader SIGKILLed mid-stream (replicas=3), publishes pipelined: every event
    stored once, in publish order per key."""
    count, kill_at = 2_000, 700
    publisher = outage_transport(cluster.urls, "FAILOVER", replicas=3)
    async with publisher:
        clock = HybridClock()
        number: dict[str, int] = {}
        futures: list[asyncio.Future[PublishAck]] = []
        for n in range(count):
            env = make_envelope(clock, f"o-{n}", key=f"k{n % KEYS}")
            number[env.id] = n
            futures.append(await publisher.send(env))
            if n == kill_at:
                info = await _patiently(lambda: publisher._js.stream_info("FAILOVER"))
                cluster.server_named(info.cluster.leader).kill()
            if n % 20 == 0:
                await asyncio.sleep(0.002)
        assert await publisher.flush(90) == 0
        acks = [future.result() for future in futures]
        stored = await _stored_ids(list(cluster.urls), "FAILOVER", "failover.>")
    assert len(acks) == count
    assert len(stored) == count
    assert set(stored) == set(number)
    assert _inversions([number[i] for i in stored]) == 0


async def test_publish_errors_mean_what_they_say_across_a_server_outage(
    own_server: NatsServer,
) -> None:
    """Server down longer than publish_timeout: a PublishError is never stored, even after
    the server comes back; a PublishOutcomeUnknownError, published again with the same
    envelope, is stored exactly once."""
    publisher = outage_transport(
        own_server.url, "OUTAGE", publish_timeout=2.0, on_publish_error=lambda env, exc: None
    )
    async with publisher:
        clock = HybridClock()
        envelopes: list[Envelope[ConformanceOrder]] = []
        futures: list[asyncio.Future[PublishAck]] = []

        async def send(n: int) -> None:
            env = make_envelope(clock, f"o-{n}", key=f"k{n % KEYS}")
            envelopes.append(env)
            futures.append(await publisher.send(env))

        for n in range(400):  # pipelined: some are on the wire when the server dies
            await send(n)
            if n % 50 == 0:
                await asyncio.sleep(0.002)
        own_server.kill()
        await _wait_connected(publisher, False, 10)
        for n in range(400, 500):  # while it is down, and the client knows it
            await send(n)
        failed = await publisher.flush(30)  # every one acked or failed, server still down
        await asyncio.to_thread(own_server.restart)
        await _wait_connected(publisher, True, 30)
        acked = [e for e, f in zip(envelopes, futures, strict=True) if not f.exception()]
        errors = [(e, f.exception()) for e, f in zip(envelopes, futures, strict=True)]
        not_stored = [e for e, exc in errors if type(exc) is PublishError]
        unknown = [e for e, exc in errors if isinstance(exc, PublishOutcomeUnknownError)]
        assert len(acked) + len(not_stored) + len(unknown) == 500
        assert failed == 500 - len(acked)
        assert len(not_stored) >= 100  # at least every publish made while the server was down
        for env, exc in errors:
            if isinstance(exc, PublishOutcomeUnknownError):
                assert exc.envelope is env
                await publisher.publish(env)  # the retry the error asks for
        # Anything a buffer still held would be stored by now: one more publish goes after it.
        await publisher.publish(make_envelope(clock, "last"))
        stored = await _stored_ids(own_server.url, "OUTAGE", "outage.>")
    copies = Counter(stored)
    assert [i for i, n in copies.items() if n > 1] == []  # no duplicates
    assert [e.id for e in not_stored if e.id in copies] == []  # "not stored" means it
    assert all(copies[e.id] == 1 for e in acked + unknown)
    assert len(stored) == len(acked) + len(unknown) + 1
