"""The Kafka transport's publish path as the bus uses it: ``check_envelope`` encodes a
record that ``send`` then takes, against a real broker (Tansu)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer

import tidings
from tidings.clock import HybridClock
from tidings.testing.transport_conformance import TIMEOUT, ConformanceOrder, make_envelope
from tidings.transports.kafka import KafkaTransport


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
