"""Consume only: tidings' KafkaTransport against raw aiokafka draining the same records.

Run: ``.venv/bin/python benchmarks/bench_kafka_consume.py [--events 20000] [--rounds 3]
[--consumers 1]``

Each round pre-produces N events (64 keys) on a fresh 4-partition topic with tidings'
``KafkaTransport`` (``bench_kafka.publish_events``: the CloudEvents binary-mode records
tidings writes, the key as record key), then lets each contender drain that topic with K consumers (separate clients) in a consumer group
of its own, one contender after the other (the order alternates by round):

- **tidings**: ``transport.subscribe(..., group=..., policy=DeliveryPolicy(prefetch=256,
  workers=1, start="all"))`` on K transports; the handler counts.
- **raw aiokafka**: ``getmany(max_records=256)`` batches, msgspec decode of each value, a
  commit every 0.1 s (``bench_kafka.raw_consume``, the e2e peer).

The clock runs from the first event handled to the last; the client CPU time
(``time.process_time``, the broker runs in its own process) over the same span is reported
per event. Figures are per round; the ratio is the median of the per-round ratios tidings /
raw (higher is better for tidings). This isolates the consuming side from publishing, which
``bench_kafka.py``'s e2e figures include.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import time
from collections.abc import Awaitable, Callable

import bench_kafka as bench
from bench_nats import Done
from tidings.testing.kafka_broker import TansuBroker
from tidings.transports import DeliveryPolicy, Message


class Span(Done):
    """Counts handled events; notes wall and CPU time at the first and at the last."""

    def __init__(self, target: int) -> None:
        super().__init__(target)
        self.first = self.first_cpu = self.last = self.last_cpu = 0.0

    def hit(self) -> None:
        self.count += 1
        if self.count == 1:
            self.first, self.first_cpu = time.perf_counter(), time.process_time()
        if self.count == self.target:
            self.last, self.last_cpu = time.perf_counter(), time.process_time()
            self.event.set()

    def figures(self) -> tuple[float, float]:
        """Events/s and client CPU µs per event between the first and the last event."""
        n = self.target - 1
        return n / (self.last - self.first), (self.last_cpu - self.first_cpu) / n * 1e6


async def tidings_drain(url: str, prefix: str, n: int, consumers: int, group: str) -> Span:
    span = Span(n)

    async def handle(message: Message) -> None:
        span.hit()

    transports = [bench.transport_for(url, prefix) for _ in range(consumers)]
    policy = DeliveryPolicy(prefetch=256, workers=1, start="all")
    try:
        for t in transports:
            await t.start()
        await asyncio.gather(
            *(t.subscribe("bench.order", handle, group=group, policy=policy) for t in transports)
        )
        await asyncio.wait_for(span.event.wait(), 120)
    finally:
        for t in transports:
            await t.aclose()
    return span


async def raw_drain(bootstrap: str, topic: str, n: int, consumers: int, group: str) -> Span:
    span = Span(n)
    async with bench.raw_group(bootstrap, topic, group, consumers, span):
        await asyncio.wait_for(span.event.wait(), 120)
    return span


async def measure(events: int, rounds: int, consumers: int) -> dict[str, list[tuple[float, float]]]:
    """Per contender, (events/s, CPU µs/event) of each round."""
    results: dict[str, list[tuple[float, float]]] = {"tidings": [], "raw aiokafka": []}
    with TansuBroker() as broker:
        for round_ in range(rounds):
            prefix = bench.fresh_prefix()
            topic = f"{prefix}.bench.order"
            await bench.make_topic(broker.bootstrap, topic)
            await bench.publish_events(broker.url, prefix, events)
            runs: list[tuple[str, Callable[[], Awaitable[Span]]]] = [
                (
                    "tidings",
                    functools.partial(tidings_drain, broker.url, prefix, events, consumers, "t"),
                ),
                (
                    "raw aiokafka",
                    functools.partial(raw_drain, broker.bootstrap, topic, events, consumers, "r"),
                ),
            ]
            if round_ % 2:
                runs.reverse()
            for name, run in runs:
                results[name].append((await run()).figures())
    return results


def main(events: int, rounds: int, consumers: int) -> None:
    results = asyncio.run(measure(events, rounds, consumers))
    print(f"consume only, {events:,} events, {consumers} consumer(s), {rounds} rounds")
    for name, values in results.items():
        rates = ", ".join(f"{r:,.0f}" for r, _ in values)
        cpus = ", ".join(f"{c:.1f}" for _, c in values)
        print(f"{name}: events/s {rates}; CPU µs/event {cpus}")
    ours, raw = results["tidings"], results["raw aiokafka"]
    ratios = [t[0] / r[0] for t, r in zip(ours, raw, strict=True)]
    cpu = [t[1] / r[1] for t, r in zip(ours, raw, strict=True)]
    print(
        f"tidings/raw events/s: median {statistics.median(ratios):.2f}x "
        f"({', '.join(f'{x:.2f}' for x in ratios)}); CPU per event tidings/raw: median "
        f"{statistics.median(cpu):.2f}x"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--consumers", type=int, default=1)
    args = parser.parse_args()
    main(args.events, args.rounds, args.consumers)
