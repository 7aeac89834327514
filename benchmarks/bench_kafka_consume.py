"""Consume only: tidings' KafkaTransport against raw aiokafka draining the same records.

Run: ``.venv/bin/python benchmarks/bench_kafka_consume.py [--events 20000] [--rounds 3]
[--consumers 1]``

Each contender is set up once, on a 4-partition topic of its own: a tidings publisher
(``bench_kafka.transport_for``: the CloudEvents binary-mode records tidings writes, 64 keys,
the key as record key) and a consumer group of K consumers (separate clients):

- **tidings**: ``transport.subscribe(..., group=..., policy=DeliveryPolicy(prefetch=256,
  workers=1))`` on K transports; the handler counts.
- **raw aiokafka**: ``getmany(max_records=256)`` batches, msgspec decode of each value, a
  commit every 0.1 s (``bench_kafka.raw_consume``, the e2e peer), its consumers configured
  as tidings' (``bench_kafka.raw_consumers``: ``fetch_max_wait_ms=100``, not aiokafka's
  500, as Tansu does not answer a waiting fetch when records arrive: see ``bench_kafka.py``).

**Method** (``bench_kafka.py``'s, so that no group join, rebalance or start-up falls inside
a round): a group must be *Stable* with all K members (the broker's DescribeGroups) and have
handled a warm-up round of 2,000 events before any round counts. In a round the consumers
are held at a gate (tidings: the handler awaits it; raw: the loop awaits it after a fetch),
N events are published and acknowledged, then the gate opens: the clock and the client CPU
time (``time.process_time``; the broker runs in its own process) run from the opening to
the last event handled, so the round drains N stored records on a group already running.
Held at the gate are what each fetched already (tidings: a message at the handler and up
to its prefetch queued; raw: a ``getmany`` batch), a small head start alike. The
contenders take turns (the order alternates by round); a round after which a group's
members changed is run again (at most twice). Figures are per round; the ratio is the
median of the per-round ratios tidings / raw (higher is better for tidings), printed with
every round's ratio. A round is not cut into slices here (``bench_kafka.py``'s K2/K3 are):
the clock starts on records already stored, so no fetch inside it waits for records.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient

import bench_kafka as bench
from bench_nats import Done
from tidings.testing.kafka_broker import TansuBroker
from tidings.transports import DeliveryPolicy, Message


class Span(Done):
    """Counts handled events; notes wall and CPU time at :meth:`start` and at the last."""

    def __init__(self, target: int) -> None:
        super().__init__(target)
        self.first = self.first_cpu = self.last = self.last_cpu = 0.0

    def start(self) -> None:
        self.first, self.first_cpu = time.perf_counter(), time.process_time()

    def hit(self) -> None:
        self.count += 1
        if self.count == self.target:
            self.last, self.last_cpu = time.perf_counter(), time.process_time()
            self.event.set()

    def figures(self) -> tuple[float, float]:
        """Events/s and client CPU µs per event from :meth:`start` to the last event."""
        n = self.target
        return n / (self.last - self.first), (self.last_cpu - self.first_cpu) / n * 1e6


class Drain:
    """What the consumers of one contender count into, and the gate that holds them."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.span = Span(0)

    def hit(self) -> None:
        self.span.hit()

    async def run(self, publish: Callable[[int], Awaitable[None]], n: int) -> Span:
        """Hold the consumers, publish ``n`` events, then let them drain (timed)."""
        self.gate.clear()
        span = self.span = Span(n)
        try:
            await publish(n)
            span.start()
        finally:
            self.gate.set()
        await asyncio.wait_for(span.event.wait(), 120)
        assert span.count == n, f"{span.count} handled, {n} expected"
        return span


@dataclass
class Side:
    """One contender, set up: its group, its drain and how to publish ``n`` events."""

    group: str
    drain: Drain
    publish: Callable[[int], Awaitable[None]]


@contextlib.asynccontextmanager
async def publisher(url: str, prefix: str) -> AsyncIterator[Callable[[int], Awaitable[None]]]:
    """Publishes ``n`` bench events under ``prefix`` with tidings, each acknowledged."""
    async with bench.transport_for(url, prefix) as transport:

        async def publish(n: int) -> None:
            for env in bench.envelopes(n):
                await transport.send(env)
            assert await transport.flush(120) == 0

        yield publish


@contextlib.asynccontextmanager
async def tidings_side(url: str, bootstrap: str, consumers: int) -> AsyncIterator[Side]:
    prefix = bench.fresh_prefix()
    await bench.make_topic(bootstrap, f"{prefix}.{bench.TOPIC}")
    drain = Drain()
    gate = drain.gate

    async def handle(message: Message) -> None:
        if not gate.is_set():
            await gate.wait()
        drain.hit()

    async with contextlib.AsyncExitStack() as stack:
        publish = await stack.enter_async_context(publisher(url, prefix))
        members = [
            await stack.enter_async_context(bench.transport_for(url, prefix))
            for _ in range(consumers)
        ]
        policy = DeliveryPolicy(prefetch=256, workers=1)
        await asyncio.gather(  # the members join together: one rebalance, not K
            *(m.subscribe(bench.TOPIC, handle, group="bench", policy=policy) for m in members)
        )
        yield Side(members[0].group_id(bench.TOPIC, "bench"), drain, publish)


@contextlib.asynccontextmanager
async def raw_side(url: str, bootstrap: str, consumers: int) -> AsyncIterator[Side]:
    prefix = bench.fresh_prefix()
    topic = f"{prefix}.{bench.TOPIC}"
    await bench.make_topic(bootstrap, topic)
    drain = Drain()
    group = f"{topic}.raw"
    async with (
        publisher(url, prefix) as publish,
        bench.raw_group(bootstrap, topic, group, consumers, drain, drain.gate),
    ):
        yield Side(group, drain, publish)


async def measure(events: int, rounds: int, consumers: int) -> dict[str, list[tuple[float, float]]]:
    """Per contender, (events/s, CPU µs/event) of each counted round."""
    results: dict[str, list[tuple[float, float]]] = {"tidings": [], "raw aiokafka": []}
    with TansuBroker() as broker:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            async with contextlib.AsyncExitStack() as stack:
                sides = {
                    "tidings": await stack.enter_async_context(
                        tidings_side(broker.url, broker.bootstrap, consumers)
                    ),
                    "raw aiokafka": await stack.enter_async_context(
                        raw_side(broker.url, broker.bootstrap, consumers)
                    ),
                }
                members = {}
                for name, side in sides.items():
                    members[name] = await bench._stable(admin, side.group, consumers)
                    await side.drain.run(side.publish, bench.WARMUP)
                repeated = 0
                round_ = 0
                while round_ < rounds:
                    names = list(sides) if round_ % 2 == 0 else list(sides)[::-1]
                    taken = {}
                    for name in names:
                        side = sides[name]
                        taken[name] = (await side.drain.run(side.publish, events)).figures()
                    changed = False
                    for name, ids in members.items():
                        state, now = await bench._members(admin, sides[name].group)
                        if state != "Stable" or now != ids:
                            changed = True
                            members[name] = await bench._stable(admin, sides[name].group, consumers)
                    if changed and repeated < bench.REPEATS:
                        repeated += 1
                        continue  # a rebalance fell into the round: run it again
                    for name, figures in taken.items():
                        results[name].append(figures)
                    round_ += 1
        finally:
            await admin.close()
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
