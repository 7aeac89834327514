"""No silent publish failure on a bus with a transport, against a real nats-server.

A refusal known before ``publish`` returns (an event above the server's ``max_payload``)
raises; one that comes later (the stream refuses the message) reaches the in-process dead
letters with the envelope, to re-send, and a metric, and is logged once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import nats
import pytest
from prometheus_client import CollectorRegistry

import tidings
from tidings import DeadLetter, PublishError, PublishOutcomeUnknownError
from tidings.observability import Metrics
from tidings.store import MemoryStore
from tidings.testing.kafka_broker import TansuBroker, find_tansu
from tidings.testing.nats_server import NatsServer
from tidings.testing.transport_conformance import TIMEOUT
from tidings.transports.kafka import KafkaTransport
from tidings.transports.nats import NatsTransport


@tidings.event("refused.blob")
@dataclass(frozen=True)
class Blob:
    data: str


async def _small_messages_only(server: NatsServer, transport: NatsTransport) -> None:
    """Make ``transport``'s stream take messages of at most 1 KiB: the server answers "not
    stored" for larger ones (under ``max_payload``), after ``publish`` returned."""
    nc = await nats.connect(server.url)
    try:
        await nc.jetstream().add_stream(
            name=transport.stream.name,
            subjects=[f"{transport.subjects.prefix}.>", f"{transport.subjects.dead_prefix}.>"],
            max_msg_size=1024,
        )
    finally:
        await nc.close()


async def test_an_event_above_max_payload_raises_in_publish_and_nothing_is_sent(
    nats_factory: Callable[..., NatsTransport], caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: publish() returned an Envelope for a 2 MB event the server refused; the
    # failure only reached the log.
    got: list[Blob] = []
    arrived = asyncio.Event()

    def receive(blob: Blob) -> None:
        got.append(blob)
        arrived.set()

    async with tidings.Bus(transport=nats_factory()) as bus:
        bus.subscribe(Blob, receive)
        await bus.start()
        with pytest.raises(PublishError, match="max_payload") as refused:
            bus.publish(Blob("x" * 2_000_000))
        assert refused.value.topic == "refused.blob"
        with pytest.raises(PublishError, match="maximum payload"):
            await bus.emit(Blob("y" * 2_000_000))
        bus.publish(Blob("small"))  # published after them: it arrives after anything they sent
        await asyncio.wait_for(arrived.wait(), TIMEOUT)
    assert got == [Blob("small")]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_later_refusal_is_dead_lettered_with_the_envelope_counted_and_logged_once(
    nats_server: NatsServer,
    nats_factory: Callable[..., NatsTransport],
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = nats_factory()
    # The stream takes messages of at most 1 KiB: the server answers "not stored" later.
    await _small_messages_only(nats_server, transport)
    registry = CollectorRegistry()
    letters: list[DeadLetter] = []
    dead = asyncio.Event()

    def on_dead_letter(letter: DeadLetter) -> None:
        letters.append(letter)
        dead.set()

    async with tidings.Bus(transport=transport) as bus:
        Metrics(bus, registry=registry)
        bus.subscribe(DeadLetter, on_dead_letter)
        env = bus.publish(Blob("z" * 4096))  # under max_payload: only the stream refuses it
        await asyncio.wait_for(dead.wait(), TIMEOUT)
        [letter] = letters
        assert letter.envelope is env  # re-sendable as it is
        assert isinstance(letter.error, PublishError)
        assert letter.handler == "tidings.publish"
        failures = registry.get_sample_value("tidings_publish_failures_total")
        assert failures == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert message.count(env.id) == 1  # the prefix is not repeated


async def test_flush_raises_for_later_refusals_naming_the_first_and_then_forgets_them(
    nats_server: NatsServer, nats_factory: Callable[..., NatsTransport]
) -> None:
    # Regression: with a transport, bus.flush() returned at once (a no-op without a store),
    # so publish + flush could not tell whether the server stored the events.
    transport = nats_factory()
    await _small_messages_only(nats_server, transport)
    letters: list[DeadLetter] = []
    async with tidings.Bus(transport=transport) as bus:
        bus.subscribe(DeadLetter, letters.append)
        await bus.start()
        bus.publish(Blob("small 1"))
        big = [bus.publish(Blob(f"{i}" + "z" * 4096)) for i in range(2)]
        bus.publish(Blob("small 2"))
        with pytest.raises(PublishError, match="2 publishes failed in all") as refused:
            await asyncio.wait_for(bus.flush(), TIMEOUT)
        assert refused.value.event_id == big[0].id
        assert [letter.envelope for letter in letters] == big  # reported as they failed too
        bus.publish(Blob("small 3"))
        await asyncio.wait_for(bus.flush(), TIMEOUT)  # checked once: nothing new failed
    assert len(letters) == 2


@pytest.mark.parametrize("own_hook", [False, True])
async def test_kafka_flush_waits_for_acks_and_raises_naming_an_event_not_acknowledged(
    own_hook: bool,
) -> None:
    # Publish + flush through the bus, the broker frozen: flush raises, typed, naming one
    # of the events (also when the transport has its own on_publish_error hook).
    try:
        find_tansu()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    told: list[str] = []
    with TansuBroker() as broker:
        transport = KafkaTransport(
            broker.url,
            prefix="flush",
            partitions=1,
            publish_timeout=2.0,
            on_publish_error=(lambda env, exc: told.append(env.id)) if own_hook else None,
        )
        async with tidings.Bus(transport=transport) as bus:
            await bus.start()
            for i in range(50):
                bus.publish(Blob(f"acked {i}"), key="k")
            await asyncio.wait_for(bus.flush(), TIMEOUT)
            assert await transport.flush(0.001) == 0  # every one acknowledged already
            broker.pause()
            try:
                lost = [bus.publish(Blob(f"lost {i}"), key="k") for i in range(3)]
                with pytest.raises(
                    (PublishError, PublishOutcomeUnknownError), match="3 publishes failed in all"
                ) as failed:
                    await asyncio.wait_for(bus.flush(), TIMEOUT)
            finally:
                broker.resume()
            error = failed.value
            assert isinstance(error, PublishError | PublishOutcomeUnknownError)
            assert error.event_id in {env.id for env in lost}
            bus.publish(Blob("after"), key="k")
            await asyncio.wait_for(bus.flush(), TIMEOUT)
    assert told == ([env.id for env in lost] if own_hook else [])


async def test_a_refused_event_is_not_appended_to_the_bus_s_store(
    nats_factory: Callable[..., NatsTransport],
) -> None:
    store = MemoryStore()
    async with tidings.Bus(transport=nats_factory(), store=store) as bus:
        with pytest.raises(PublishError, match="max_payload"):
            bus.publish(Blob("x" * 2_000_000))
        with pytest.raises(PublishError, match="max_payload"):
            await bus.emit(Blob("x" * 2_000_000))
        bus.publish(Blob("small"))
        assert [record.envelope.payload for record in await store.read()] == [Blob("small")]
