"""tidings' Kafka consuming path without a broker, for callgrind: instructions per event.

``python _callgrind_kafka_consume.py N [--build-only]`` builds N records as tidings writes
them (the headers of :func:`tidings.transports._kafka_wire.record_of`, 64 keys, 4
partitions), then drains them through a real subscription (``KafkaTransport``'s
``_Subscription.fetch`` and the shared :class:`~tidings.transports._consumer.Consumer`,
``workers=1, prefetch=256``, a handler that counts) whose aiokafka consumer is replaced by a
stand-in handing out the prebuilt batches of 256, and prints the CPU µs per event.

Run it under ``valgrind --tool=callgrind`` for two sizes (and ``--build-only`` for the same
two) and take the difference: ``(I(N2) - I(N1) - (B(N2) - B(N1))) / (N2 - N1)`` is the
instructions tidings spends per consumed event on top of aiokafka's record parsing (which
the stand-in leaves out), repeatable on a loaded machine where wall and CPU time are not.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from aiokafka.structs import ConsumerRecord, TopicPartition

import bench_kafka as bench
from tidings.transports import DeliveryPolicy, Message
from tidings.transports import kafka as kafka_transport
from tidings.transports._kafka_wire import record_of

TOPIC = "kc.bench.order"
BATCH = 256


def batches(n: int) -> list[dict[TopicPartition, list[Any]]]:
    """``n`` records in batches of :data:`BATCH`, as ``getmany`` returns them."""
    partitions = [TopicPartition(TOPIC, p) for p in range(bench.PARTITIONS)]
    envelopes = bench._envelopes(n)
    out: list[dict[TopicPartition, list[Any]]] = []
    for start in range(0, n, BATCH):
        batch: dict[TopicPartition, list[Any]] = {}
        for i in range(start, min(start + BATCH, n)):
            headers, body, key = record_of(envelopes[i])
            p = i % bench.PARTITIONS
            record = ConsumerRecord(
                TOPIC, p, i // bench.PARTITIONS, 0, 0, key, body, None, len(key or b""),
                len(body), tuple(headers),
            )  # fmt: skip
            batch.setdefault(partitions[p], []).append(record)
        out.append(batch)
    return out


class StandIn:
    """What ``_Subscription.fetch`` uses of an aiokafka consumer, serving prebuilt batches."""

    def __init__(self, prebuilt: list[dict[TopicPartition, list[Any]]]) -> None:
        self._batches = iter(prebuilt)

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        return next(self._batches, {})

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(TOPIC, p) for p in range(bench.PARTITIONS)}


async def drain(n: int) -> float:
    """CPU µs per event to drain ``n`` prebuilt records through a subscription."""
    prebuilt = batches(n)
    transport = kafka_transport.KafkaTransport("kafka://127.0.0.1:1", prefix="kc")
    transport._state = "started"  # no broker: the stand-in serves the records
    kafka = kafka_transport._Subscription(transport, StandIn(prebuilt), start="all", name="h")
    done = asyncio.Event()
    handled = 0

    async def handle(message: Message) -> None:
        nonlocal handled
        handled += 1
        if handled == n:
            done.set()

    async def release() -> None:
        return None

    start = time.process_time()
    consumer = transport._start_consumer(
        "bench.order",
        None,
        "h",
        DeliveryPolicy(prefetch=BATCH, workers=1, start="all"),
        handle,
        kafka.fetch,
        transport._decoder(None),
        None,
        release,
    )
    await asyncio.wait_for(done.wait(), 600)
    cpu = time.process_time() - start
    await consumer.cancel()
    return cpu / n * 1e6


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    if "--build-only" in sys.argv:
        batches(count)
    else:
        print(f"{asyncio.run(drain(count)):.2f} CPU µs/event")
