"""Draining a Kafka topic, tidings against raw aiokafka, for callgrind: instructions per event.

``python _callgrind_kafka_consume.py tidings|raw N`` starts a Tansu broker, has a child
process publish N events with tidings' ``KafkaTransport`` (the records tidings writes:
CloudEvents binary-mode headers, 64 keys, 4 partitions; valgrind does not trace the child
or the broker), then drains them in this process with one consumer, through public API only:

- **tidings**: ``subscribe("bench.order", handler, policy=DeliveryPolicy(prefetch=256,
  workers=1, start="all"))``, a handler that counts (commits as the transport does);
- **raw**: an ``AIOKafkaConsumer`` in a group of its own running ``bench_kafka.py``'s raw
  loop (``getmany(max_records=256)``, msgspec decode of each value, a commit every 0.1 s).

It prints the client CPU µs per event of the drain and the garbage collections it ran
(``gc.get_stats()`` differences: generations 0, 1 and 2). Run it under ``valgrind
--tool=callgrind`` for two sizes and take ``(I(N2) - I(N1)) / (N2 - N1)``: the instructions
each side spends per consumed event (aiokafka's record parsing included on both), which
set-up and start-up cancel out of, repeatable on a loaded machine where wall and CPU time
are not::

    valgrind --tool=callgrind python benchmarks/_callgrind_kafka_consume.py tidings 2000
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import time

import bench_kafka as bench
from bench_nats import Done
from tidings.testing.kafka_broker import TansuBroker
from tidings.transports import DeliveryPolicy, Message


async def drain_tidings(url: str, prefix: str, n: int) -> float:
    """CPU µs per event to drain ``n`` events through a tidings subscription."""
    done = asyncio.Event()
    handled = 0

    async def handle(message: Message) -> None:
        nonlocal handled
        handled += 1
        if handled == n:
            done.set()

    async with bench.transport_for(url, prefix) as transport:
        start = time.process_time()
        policy = DeliveryPolicy(prefetch=256, workers=1, start="all")
        await transport.subscribe(bench.TOPIC, handle, policy=policy)
        await asyncio.wait_for(done.wait(), 600)
        cpu = time.process_time() - start
    return cpu / n * 1e6


async def drain_raw(bootstrap: str, prefix: str, n: int) -> float:
    """CPU µs per event to drain ``n`` events with a raw aiokafka consumer
    (:func:`bench_kafka.raw_consume`)."""
    topic = f"{prefix}.{bench.TOPIC}"
    done = Done(n)
    start = time.process_time()
    async with bench.raw_group(bootstrap, topic, f"{topic}.raw", 1, done):
        await asyncio.wait_for(done.event.wait(), 600)
        cpu = time.process_time() - start
    assert done.count == n, f"{done.count} of {n} drained"
    return cpu / n * 1e6


def main(side: str, n: int) -> None:
    with TansuBroker() as broker:
        prefix = bench.fresh_prefix()
        asyncio.run(bench.make_topic(broker.bootstrap, f"{prefix}.{bench.TOPIC}"))
        subprocess.run(  # untraced: only the drain counts
            [sys.executable, __file__, "produce", broker.url, prefix, str(n)], check=True
        )
        before = [stats["collections"] for stats in gc.get_stats()]
        if side == "tidings":
            cpu = asyncio.run(drain_tidings(broker.url, prefix, n))
        else:
            cpu = asyncio.run(drain_raw(broker.bootstrap, prefix, n))
        after = [stats["collections"] for stats in gc.get_stats()]
    runs = "/".join(str(b - a) for a, b in zip(before, after, strict=True))
    print(f"{side}: {cpu:.2f} CPU µs/event, gc collections (gen 0/1/2) {runs}")


if __name__ == "__main__":
    if sys.argv[1] == "produce":
        asyncio.run(bench.publish_events(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    elif sys.argv[1] in ("tidings", "raw"):
        main(sys.argv[1], int(sys.argv[2]))
    else:
        raise SystemExit(__doc__)
