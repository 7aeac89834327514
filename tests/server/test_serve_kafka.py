"""``transport: kafka://`` in the gateway config, through a real ``tidings serve`` process
and a Tansu broker: every event posted (and answered 202) is routed once to its ``nats``
target, which publishes through the configured transport, Kafka here; an observer consuming
the Kafka topic counts them exactly (none lost, none doubled)."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

import tidings
from tidings.testing.kafka_broker import TansuBroker
from tidings.transports.kafka import KafkaTransport

from .conftest import structured
from .test_serve import gateway_process

EVENTS = 200
TIMEOUT = 60.0


async def _records_on(bootstrap: str, topic: str) -> int:
    """How many records the broker holds on ``topic`` (the sum of its partitions' ends)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
    finally:
        await consumer.stop()
    return sum(ends[tp] - starts[tp] for tp in partitions)


async def test_gateway_with_a_kafka_transport_publishes_and_routes_each_event_once(
    tmp_path: Path,
) -> None:
    with TansuBroker() as broker:
        routed: Counter[int] = Counter()
        arrived = asyncio.Event()
        transport = KafkaTransport(broker.url, connect_timeout=20, metadata_refresh=0.5)
        observer = tidings.Bus(transport=transport)

        @observer.on("routed.>", group="observer")
        async def seen(envelope: tidings.Envelope[Any]) -> None:
            routed[envelope.payload["n"]] += 1
            arrived.set()

        await observer.start()
        (tmp_path / "g.yaml").write_text(
            f"store: sqlite:///events.db\ntransport: {broker.url}\n"
            "routes: [{name: r, from: load.>, to: [{nats: routed.load}]}]\n"
        )
        try:
            async with (
                gateway_process(tmp_path, "g.yaml") as gateway,
                httpx.AsyncClient(timeout=20) as client,
            ):
                answers = [
                    await client.post(
                        f"{gateway.url}/events",
                        json=structured(n, "load.x"),
                        headers={"content-type": "application/cloudevents+json"},
                    )
                    for n in range(EVENTS)
                ]
                assert [a.status_code for a in answers] == [202] * EVENTS
                assert await gateway.stop(signal.SIGINT) == 0  # drained: all published
            # The gateway is gone: the broker holds every record there will be. The observer
            # has seen them all once it counted that many (no grace period for more).
            stored = await _records_on(broker.bootstrap, transport.destination("routed.load"))
            try:
                async with asyncio.timeout(TIMEOUT):
                    while sum(routed.values()) < stored:
                        arrived.clear()
                        await arrived.wait()
            except TimeoutError:
                pytest.fail(
                    f"after {TIMEOUT:g}s the observer saw {sum(routed.values())} of the "
                    f"{stored} records of {EVENTS} routed events on Kafka"
                )
        finally:
            await observer.aclose()
    assert routed == Counter(range(EVENTS))  # each routed once: none lost, none doubled
    assert stored == EVENTS  # what the broker holds: one record per event
