"""The Kafka transport's publish path as the bus uses it: ``check_envelope`` encodes a
record that ``send`` then takes, against a real broker (Tansu)."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
import weakref
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer

import tidings
from tidings.clock import HybridClock
from tidings.event import Envelope
from tidings.exceptions import TransportClosedError
from tidings.testing.transport_conformance import TIMEOUT, ConformanceOrder, make_envelope
from tidings.transports.kafka import KafkaTransport

from .checked_drop import assert_unpublished_checks_are_dropped


async def _values(broker: Any, topic: str, count: int) -> list[bytes]:
    """The values of the first ``count`` records of ``topic`` (waits at most TIMEOUT)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(values) < count and time.monotonic() < deadline:
            for part in (await consumer.getmany(timeout_ms=500)).values():
                values.extend(record.value for record in part)
    finally:
        await consumer.stop()
    return values


async def test_a_checked_record_goes_only_with_its_own_envelope_not_one_of_the_same_id(
    kafka_broker: Any, kafka_factory: Callable[..., KafkaTransport]
) -> None:
    # Regression: the record check_envelope encoded was kept under the event's id text,
    # so another envelope with the same id (a copy with other data) was sent with it.
    clock = HybridClock()
    checked = make_envelope(clock, "checked", key="k")
    other = msgspec.structs.replace(checked, payload=ConformanceOrder("other", 5.0))
    assert other.id == checked.id
    async with kafka_factory(partitions=1) as transport:
        transport.check_envelope(checked)
        await (await transport.send(other))
        await (await transport.send(checked))
        values = await _values(kafka_broker, transport.destination(checked.topic), 2)
    assert [msgspec.json.decode(value)["order_id"] for value in values] == ["other", "checked"]


async def test_a_bus_s_publishes_are_all_stored_once_in_order_when_flush_returns(
    kafka_broker: Any, kafka_factory: Callable[..., KafkaTransport]
) -> None:
    # bus.publish many, then flush: what K1 measures. The outbox wakes its pump only
    # when it was empty; every event still goes, in publish order, none twice.
    transport = kafka_factory(partitions=1)
    async with tidings.Bus(transport=transport) as bus:
        await bus.start()
        sent = [bus.publish(ConformanceOrder(f"o-{i}", 1.0), key="k") for i in range(500)]
        await asyncio.wait_for(bus.flush(), TIMEOUT)
        assert await transport.flush(TIMEOUT) == 0
        values = await _values(kafka_broker, transport.destination(sent[0].topic), 500)
    assert [msgspec.json.decode(v)["order_id"] for v in values] == [f"o-{i}" for i in range(500)]


@dataclasses.dataclass
class _Note:
    """A payload a test can hold a weak reference to (a Struct payload cannot)."""

    text: str


def _noted(clock: HybridClock, text: str) -> tuple[Envelope[_Note], weakref.ref[_Note]]:
    """An envelope of a fresh :class:`_Note`, and a weak reference to the note (alive as
    long as the envelope is)."""
    note = _Note(text)
    return Envelope("conformance.note", note, clock.now()), weakref.ref(note)


async def test_a_checked_record_that_no_publish_takes_is_not_kept(
    kafka_factory: Callable[..., KafkaTransport],
) -> None:
    # Regression: check_envelope kept each record it encoded until a publish took it, or
    # until the close: one whose publish never came (the bus's store append failed after
    # the check) was kept, with its envelope, for the transport's life.
    async with kafka_factory(partitions=1, window=8) as transport:
        await assert_unpublished_checks_are_dropped(transport, 8)


async def test_checks_from_several_threads_while_records_are_dropped_all_pass(
    kafka_factory: Callable[..., KafkaTransport],
) -> None:
    # Regression: the drop of the checked records no publish took walked the cache while
    # checks in other threads (a bus publishes from any thread; check_envelope runs in the
    # caller's) added to it: "dictionary changed size during iteration" from a check.
    window, threads, checks = 512, 4, 512 * 24
    clock = HybridClock()
    failures: list[BaseException] = []

    def check_many(transport: KafkaTransport, envelopes: list[Envelope[Any]]) -> None:
        for envelope in envelopes:  # none published: each sweep drops a window of them
            try:
                transport.check_envelope(envelope)
            except Exception as exc:  # any is the failure looked for
                failures.append(exc)
                return

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch as often as they can: the race shows
    try:
        transport = kafka_factory(partitions=1, window=window)
        async with transport:
            work = [
                asyncio.to_thread(
                    check_many, transport, [make_envelope(clock, f"{n}-{i}") for i in range(checks)]
                )
                for n in range(threads)
            ]
            await asyncio.wait_for(asyncio.gather(*work), TIMEOUT)
            assert failures == []
            assert len(transport._encoded) <= 17 * window + threads  # 16 windows, and one
    finally:
        sys.setswitchinterval(interval)


async def test_a_record_checked_again_does_not_keep_the_others(
    kafka_factory: Callable[..., KafkaTransport],
) -> None:
    # Regression: an envelope checked again kept its place in the cache with the number of
    # its last check, and the drop, walking in place order, stopped at it: checked again
    # within every 16 windows (a caller retrying it while its store fails), it kept every
    # record checked after its first check, with its envelope.
    window = 8
    clock = HybridClock()
    async with kafka_factory(partitions=1, window=window) as transport:
        retried = make_envelope(clock, "retried")
        transport.check_envelope(retried)
        orphan, orphan_note = _noted(clock, "checked, its append failed")
        transport.check_envelope(orphan)
        del orphan
        for i in range(20 * window):
            if i % window == 0:
                transport.check_envelope(retried)
            transport.check_envelope(make_envelope(clock, f"never-{i}"))
        assert orphan_note() is None
        await (await transport.send(retried))  # still taken as checked last
        assert await transport.flush(TIMEOUT) == 0


async def test_a_record_checked_for_a_closed_transport_is_not_kept(
    kafka_factory: Callable[..., KafkaTransport],
) -> None:
    # Regression: a publish refused by a closed transport left the record its check had
    # encoded in the cache, with its envelope (up to 16 windows of them, for the
    # transport's life once nothing more is checked).
    clock = HybridClock()
    transport = kafka_factory(partitions=1, window=8)
    async with transport:
        pass
    for publish in (transport.publish, transport.send):
        envelope, note = _noted(clock, "checked after the close")
        transport.check_envelope(envelope)
        with pytest.raises(TransportClosedError):
            await publish(envelope)
        del envelope
        assert note() is None
