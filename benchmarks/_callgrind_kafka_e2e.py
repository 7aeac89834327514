"""Kafka end to end with K consumers in one group (K3 at K=4), tidings against raw aiokafka,
for callgrind: instructions per event.

``python _callgrind_kafka_e2e.py tidings|raw N [K]`` starts a Tansu broker and, in this
process as ``bench_kafka.py``'s e2e cases do, a publisher and K consumers (separate clients,
default 4) in one consumer group on a 4-partition topic, events keyed over 64 keys:

- **tidings**: a ``KafkaTransport`` publishing with ``send`` then ``flush``, and K more,
  each ``subscribe(..., group="bench", policy=DeliveryPolicy(prefetch=256, workers=1))``
  with a handler that counts (commits every 0.1 s as the transport does);
- **raw**: an idempotent ``AIOKafkaProducer`` (``send`` of the same bytes, every delivery
  future awaited) and K ``AIOKafkaConsumer``\\ s running ``bench_kafka.py``'s raw loop
  (``getmany(timeout_ms=100, max_records=256)``, msgspec decode, a commit every 0.1 s).

Once the group is Stable with its K members and a warm-up round of 2,000 events was
handled, one round of N events runs (published, then every one handled). It prints the
round's client CPU µs per event and how many fetches returned records (``getmany`` calls
with records, and their mean size). Run it under ``valgrind --tool=callgrind`` for two sizes
and take ``(I(N2) - I(N1)) / (N2 - N1)``: the instructions each side spends per event,
publishing and consuming, which set-up, the join and the warm-up cancel out of::

    valgrind --tool=callgrind python benchmarks/_callgrind_kafka_e2e.py tidings 2000 4

Valgrind slows the client some 50 times and not the broker, so fetches return larger
batches than at full speed (per-fetch costs weigh less than they do in ``bench_kafka.py``):
read the CPU µs per event of runs without valgrind beside the instruction counts. The
session timeout is 10 s (not ``bench_kafka.py``'s 3 s), so that a client slowed this much
keeps its group, and a subscription may take 60 s to start. Commits (and tidings' metadata
refreshes) go by the clock: 0.1 s is some 1,250 events at full speed but 25 under
valgrind, where they would swamp the figures, so both sides commit every 5 s here and
tidings refreshes metadata every 300 s (aiokafka's default, the raw consumers'): the
instructions are those of publishing and consuming, commits left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

import bench_kafka as bench
from tidings.testing.kafka_broker import TansuBroker
from tidings.transports import DeliveryPolicy, Message
from tidings.transports.kafka import KafkaTransport

SESSION = 10.0
"""Seconds of the group's session timeout (a client under valgrind is slow)."""
COMMIT_INTERVAL = 5.0
"""Seconds between commits, on both sides (``bench_kafka.py``: 0.1 s; see the docstring)."""

Round = Callable[[int], Awaitable[None]]
"""Publishes N events and returns once every one is acknowledged and handled."""


class Fetches:
    """Counts the ``getmany`` calls that returned records, and the records they returned."""

    def __init__(self) -> None:
        self.calls = 0
        self.records = 0

    def count(self) -> None:
        """Wrap ``AIOKafkaConsumer.getmany`` (every consumer of this process) to count."""
        getmany = AIOKafkaConsumer.getmany

        async def counted(consumer: AIOKafkaConsumer, *args: Any, **kwargs: Any) -> Any:
            out = await getmany(consumer, *args, **kwargs)
            if out:
                self.calls += 1
                self.records += sum(len(records) for records in out.values())
            return out

        AIOKafkaConsumer.getmany = counted  # type: ignore[method-assign]


@contextlib.asynccontextmanager
async def tidings_side(url: str, bootstrap: str, k: int) -> AsyncIterator[tuple[str, Round]]:
    prefix = bench.fresh_prefix()
    await bench.make_topic(bootstrap, f"{prefix}.{bench.TOPIC}")
    handled = bench.Handled()

    async def handle(message: Message) -> None:
        handled.hit()

    def transport() -> KafkaTransport:
        return KafkaTransport(
            url,
            prefix=prefix,
            partitions=bench.PARTITIONS,
            session_timeout=SESSION,
            connect_timeout=60,
            commit_interval=COMMIT_INTERVAL,
            metadata_refresh=300,  # aiokafka's default, as the raw consumers have
        )

    async with contextlib.AsyncExitStack() as stack:
        publisher = await stack.enter_async_context(transport())
        members = [await stack.enter_async_context(transport()) for _ in range(k)]
        policy = DeliveryPolicy(prefetch=256, workers=1)
        await asyncio.gather(
            *(m.subscribe(bench.TOPIC, handle, group="bench", policy=policy) for m in members)
        )

        async def run_round(n: int) -> None:
            batch = bench.envelopes(n)
            done = handled.arm(n)
            for env in batch:
                await publisher.send(env)
            assert await publisher.flush(600) == 0
            await asyncio.wait_for(done.event.wait(), 600)
            assert done.count == n

        yield publisher.group_id(bench.TOPIC, "bench"), run_round


@contextlib.asynccontextmanager
async def raw_side(url: str, bootstrap: str, k: int) -> AsyncIterator[tuple[str, Round]]:
    topic = f"{bench.fresh_prefix()}.{bench.TOPIC}"
    await bench.make_topic(bootstrap, topic)
    group = f"{topic}.raw"
    handled = bench.Handled()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        async with bench.raw_group(bootstrap, topic, group, k, handled):

            async def run_round(n: int) -> None:
                records = bench.raw_records(n)
                done = handled.arm(n)
                futures = [
                    await producer.send(topic, value, key=key, headers=headers)
                    for value, key, headers in records
                ]
                for future in futures:
                    await future
                await asyncio.wait_for(done.event.wait(), 600)
                assert done.count == n

            yield group, run_round
    finally:
        await producer.stop()


async def measure(side: str, url: str, bootstrap: str, n: int, k: int) -> tuple[float, Fetches]:
    """CPU µs per event of one round of ``n`` events, after the group is Stable and warm."""
    setup = tidings_side if side == "tidings" else raw_side
    bench.COMMIT_INTERVAL = COMMIT_INTERVAL  # raw_consume's
    bench.SESSION = SESSION  # raw_consumers'
    fetches = Fetches()
    fetches.count()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        async with setup(url, bootstrap, k) as (group, run_round):
            await bench._stable(admin, group, k)
            await run_round(bench.WARMUP)
            fetches.calls = fetches.records = 0
            start = time.process_time()
            await run_round(n)
            cpu = time.process_time() - start
    finally:
        await admin.close()
    return cpu / n * 1e6, fetches


def main(side: str, n: int, k: int) -> None:
    with TansuBroker() as broker:
        cpu, fetches = asyncio.run(measure(side, broker.url, broker.bootstrap, n, k))
    mean = fetches.records / fetches.calls if fetches.calls else 0.0
    print(
        f"{side} x{k}: {cpu:.2f} CPU µs/event; {fetches.calls} fetches with records, "
        f"{mean:.1f} records each"
    )


if __name__ == "__main__":
    if len(sys.argv) in (3, 4) and sys.argv[1] in ("tidings", "raw"):
        main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) == 4 else 4)
    else:
        raise SystemExit(__doc__)
