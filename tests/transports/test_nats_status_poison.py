"""A message stored on a tidings subject that looks like a JetStream status reply (empty
body, a ``Status`` header) is an event like any other: it never stalls, reorders or
exhausts the good events around it."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import nats

from tidings.clock import HybridClock
from tidings.testing.nats_server import NatsServer
from tidings.testing.transport_conformance import Collector, make_envelope
from tidings.transports import DeadLetterRecord, DeliveryPolicy
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
        dead: list[DeadLetterRecord] = []
        dead_arrived = asyncio.Event()

        async def on_dead(record: DeadLetterRecord) -> None:
            dead.append(record)
            dead_arrived.set()

        await transport.subscribe_dead_letters(on_dead)
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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while len(dead) < 2 and loop.time() < deadline:
            dead_arrived.clear()
            await asyncio.wait_for(dead_arrived.wait(), deadline - loop.time())
        # Every good event was handled once, at its first delivery: none nak'd back unseen.
        assert Counter(got.ids) == Counter(good)
        assert [m.attempt for m in got.messages] == [1] * good_count
        stats = sub.stats()
        # No good event dead-lettered (as exhausted, or at all): only the two forged ones.
        assert (stats.delivered, stats.acked, stats.retried) == (good_count + 2, good_count, 0)
        assert (stats.dead_lettered, stats.decode_errors) == (2, 2)
        # The two forged messages are undecodable events, dead-lettered as such.
        assert sorted(r.headers.get("Status", "") for r in dead) == ["100", "503"]
        for record in dead:
            assert record.handler == "tidings.decode"
            assert record.body == b""
            assert record.attempts == 1
