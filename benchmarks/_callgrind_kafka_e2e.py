"""Kafka end to end with K consumers in one group (K3 at K=4), tidings against raw aiokafka,
for callgrind: instructions per event.

``python _callgrind_kafka_e2e.py tidings|raw N [K [drain]] [wait=MS]`` starts a Tansu broker and, in
this process as ``bench_kafka.py``'s e2e cases do, a publisher and K consumers (separate
clients, default 4) in one consumer group on a 4-partition topic, events keyed over 64 keys:

- **tidings**: a ``KafkaTransport`` publishing with ``send`` then ``flush``, and K more,
  each ``subscribe(..., group="bench", policy=DeliveryPolicy(prefetch=256, workers=1))``
  with a handler that counts;
- **raw**: an idempotent ``AIOKafkaProducer`` (``send`` of the same bytes, every delivery
  future awaited) and K ``AIOKafkaConsumer``\\ s running ``bench_kafka.py``'s raw loop
  (``getmany(timeout_ms=100, max_records=256)``, msgspec decode, commits), their fetches
  waiting up to aiokafka's default ``fetch_max_wait_ms`` of 500 (tidings': 100), or ``MS``
  with ``wait=MS``: on Tansu the wait decides how many fetch requests a round takes (see
  docs/kafka.md).

Once the group is Stable with its K members and a warm-up round of 2,000 events was
handled, one round of N events runs: published, then every one handled (K=0: published
only, every one acknowledged). With ``drain``, the consumers only (``bench_kafka_consume.py``'s
method): a child process publishes the round with tidings (both sides read the same
records) while the consumers are held at a gate (tidings: the handler awaits it; raw: the
loop, after a fetch), then the gate opens and the consumers drain the topic. It prints the
client CPU µs per event of the measured part (the round; with ``drain``, from the gate's
opening to the last event handled), split into user and system time (``getrusage``), with
the context switches and the collector's passes in it, and how many fetches returned
records (``getmany`` calls with records, their mean size, and all ``getmany`` calls).

Under callgrind the measured part's counters are zeroed as it starts and dumped as it ends
(``callgrind_control``: the dump is ``<callgrind-out-file>.1``); take the instructions of
that dump for two sizes, ``(I(N2) - I(N1)) / (N2 - N1)``, so that what each consumer
fetched before a drain's gate opened (up to its prefetch) cancels out::

    valgrind --tool=callgrind --callgrind-out-file=cg.out \\
        python benchmarks/_callgrind_kafka_e2e.py tidings 8000 4 drain

Valgrind slows the client some 50 times and not the broker, so what goes by the clock (how
the publisher's batches and the consumers' fetches interleave end to end) differs from a
run at full speed: the fetches it printed end to end were 57-68 records each for tidings
and 50 for raw aiokafka under valgrind (K=4), 75-90 and 120-240 at full speed; a drain
depends on the clock much less. Read the CPU µs per event of runs without valgrind beside
the instruction counts. The session timeout is 10 s (not ``bench_kafka.py``'s 3 s), so that
a client slowed this much keeps its group, and a subscription may take 60 s to start.
Commits (and tidings' metadata refreshes) go by the clock: 0.1 s is some 1,250 events at
full speed but 25 under valgrind, where they would swamp the figures, so both sides commit
every 5 s here and tidings refreshes metadata every 300 s (aiokafka's default, the raw
consumers'): the instructions are those of publishing and consuming, commits left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import resource
import shutil
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import astuple, dataclass
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

Round = Callable[[int, "Window"], Awaitable[None]]
"""Publishes N events and returns once every one is acknowledged and handled, the measured
part in the window."""


class Fetches:
    """Counts the ``getmany`` calls, those that returned records, and the records they
    returned."""

    def __init__(self) -> None:
        self.all = 0
        self.calls = 0
        self.records = 0

    def count(self) -> None:
        """Wrap ``AIOKafkaConsumer.getmany`` (every consumer of this process) to count."""
        getmany = AIOKafkaConsumer.getmany

        async def counted(consumer: AIOKafkaConsumer, *args: Any, **kwargs: Any) -> Any:
            out = await getmany(consumer, *args, **kwargs)
            self.all += 1
            if out:
                self.calls += 1
                self.records += sum(len(records) for records in out.values())
            return out

        AIOKafkaConsumer.getmany = counted  # type: ignore[method-assign]


class Window:
    """The measured part of a round: the client CPU time it took and, under callgrind, its
    instructions alone (the counters are zeroed as it opens and dumped as it closes, with
    ``callgrind_control``; the dump is ``<callgrind-out-file>.1``)."""

    def __init__(self, measured: bool) -> None:
        self.measured = measured
        self.cpu = 0.0
        self.usage = Usage()
        preload = os.environ.get("LD_PRELOAD", "")
        self.callgrind = measured and "vgpreload" in preload and shutil.which("callgrind_control")

    async def _control(self, option: str) -> None:
        if self.callgrind:
            control = await asyncio.create_subprocess_exec(
                "callgrind_control", option, str(os.getpid()), stdout=asyncio.subprocess.DEVNULL
            )
            assert await asyncio.wait_for(control.wait(), 600) == 0

    async def open(self) -> None:
        await self._control("--zero")
        self.usage = Usage.now()
        self.cpu = time.process_time()

    async def close(self) -> None:
        self.cpu = time.process_time() - self.cpu
        self.usage = Usage.now() - self.usage
        await self._control("--dump")


@dataclass
class Usage:
    """What ``getrusage`` and the collector tell of this process: user and system CPU
    seconds, voluntary and involuntary context switches, the collector's passes (all
    generations, and of the oldest)."""

    user: float = 0.0
    system: float = 0.0
    voluntary: int = 0
    involuntary: int = 0
    collections: int = 0
    full: int = 0

    @classmethod
    def now(cls) -> Usage:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        stats = gc.get_stats()
        return cls(
            usage.ru_utime,
            usage.ru_stime,
            usage.ru_nvcsw,
            usage.ru_nivcsw,
            sum(generation["collections"] for generation in stats),
            stats[-1]["collections"],
        )

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            *(mine - theirs for mine, theirs in zip(astuple(self), astuple(other), strict=True))
        )


async def publish_apart(url: str, prefix: str, n: int) -> None:
    """Publish ``n`` events under ``prefix`` from a child process (valgrind does not trace
    it), every one acknowledged (:func:`bench_kafka.publish_events`)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "produce", url, prefix, str(n)
    )
    assert await asyncio.wait_for(child.wait(), 600) == 0


@dataclass
class Consumers:
    """What a side's round needs of its consumers."""

    url: str
    prefix: str
    k: int
    drain: bool
    handled: bench.Handled
    gate: asyncio.Event
    """Holds the consumers while a drain's events are published."""


def rounds(consumers: Consumers, prepare: Callable[[int], Callable[[], Awaitable[None]]]) -> Round:
    """A side's round: its events published (``prepare(n)`` builds them, before the window
    opens; with ``drain``, a child publishes them behind the gate) and every one handled."""

    async def run_round(n: int, window: Window) -> None:
        c = consumers
        done = c.handled.arm(n)
        if c.drain:
            c.gate.clear()
            await publish_apart(c.url, c.prefix, n)
            await window.open()
            c.gate.set()
        else:
            publish = prepare(n)
            await window.open()
            await publish()
        if c.k:
            await asyncio.wait_for(done.event.wait(), 600)
            assert done.count == n

    return run_round


@contextlib.asynccontextmanager
async def tidings_side(
    url: str, bootstrap: str, k: int, drain: bool
) -> AsyncIterator[tuple[str, Round]]:
    prefix = bench.fresh_prefix()
    await bench.make_topic(bootstrap, f"{prefix}.{bench.TOPIC}")
    handled = bench.Handled()
    gate = asyncio.Event()
    gate.set()

    async def handle(message: Message) -> None:
        if not gate.is_set():
            await gate.wait()
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

        def prepare(n: int) -> Callable[[], Awaitable[None]]:
            batch = bench.envelopes(n)

            async def publish() -> None:
                for env in batch:
                    await publisher.send(env)
                assert await publisher.flush(600) == 0

            return publish

        yield (
            publisher.group_id(bench.TOPIC, "bench"),
            rounds(Consumers(url, prefix, k, drain, handled, gate), prepare),
        )


@contextlib.asynccontextmanager
async def raw_side(
    url: str, bootstrap: str, k: int, drain: bool
) -> AsyncIterator[tuple[str, Round]]:
    prefix = bench.fresh_prefix()
    topic = f"{prefix}.{bench.TOPIC}"
    await bench.make_topic(bootstrap, topic)
    group = f"{topic}.raw"
    handled = bench.Handled()
    gate = asyncio.Event()
    gate.set()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        async with bench.raw_group(bootstrap, topic, group, k, handled, gate):

            def prepare(n: int) -> Callable[[], Awaitable[None]]:
                records = bench.raw_records(n)

                async def publish() -> None:
                    futures = [
                        await producer.send(topic, value, key=key, headers=headers)
                        for value, key, headers in records
                    ]
                    for future in futures:
                        await future

                return publish

            yield group, rounds(Consumers(url, prefix, k, drain, handled, gate), prepare)
    finally:
        await producer.stop()


async def measure(
    side: str, url: str, bootstrap: str, n: int, k: int, drain: bool = False
) -> tuple[Window, Fetches]:
    """CPU µs per event of one round of ``n`` events, after the group is Stable and warm."""
    setup = tidings_side if side == "tidings" else raw_side
    bench.COMMIT_INTERVAL = COMMIT_INTERVAL  # raw_consume's
    bench.SESSION = SESSION  # raw_consumers'
    fetches = Fetches()
    fetches.count()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        async with setup(url, bootstrap, k, drain) as (group, run_round):
            if k:
                await bench._stable(admin, group, k)
            await run_round(bench.WARMUP, Window(measured=False))
            fetches.all = fetches.calls = fetches.records = 0
            window = Window(measured=True)
            await run_round(n, window)
            await window.close()
    finally:
        await admin.close()
    return window, fetches


def main(side: str, n: int, k: int, drain: bool) -> None:
    with TansuBroker() as broker:
        window, fetches = asyncio.run(measure(side, broker.url, broker.bootstrap, n, k, drain))
    mean = fetches.records / fetches.calls if fetches.calls else 0.0
    use = window.usage
    print(
        f"{side} x{k}{' drain' if drain else ''}: {window.cpu / n * 1e6:.2f} CPU µs/event "
        f"(user {use.user / n * 1e6:.2f}, system {use.system / n * 1e6:.2f}); "
        f"{fetches.calls} fetches with records, {mean:.1f} records each, {fetches.all} getmany "
        f"calls; context switches {use.voluntary} voluntary, {use.involuntary} involuntary; "
        f"{use.collections} collections ({use.full} full)"
    )


def raw_fetch_wait(ms: int) -> None:
    """Make the raw consumers wait up to ``ms`` for a fetch (aiokafka's default: 500;
    tidings': 100), to compare the two sides at the same wait."""
    bench.AIOKafkaConsumer = functools.partial(  # type: ignore[misc]
        AIOKafkaConsumer, fetch_max_wait_ms=ms
    )


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[-1:] and args[-1].startswith("wait=") and args[:1] == ["raw"]:
        raw_fetch_wait(int(args.pop().removeprefix("wait=")))
    if args[:1] == ["produce"] and len(args) == 4:
        asyncio.run(bench.publish_events(args[1], args[2], int(args[3])))
    elif 2 <= len(args) <= 4 and args[0] in ("tidings", "raw") and args[3:] in ([], ["drain"]):
        main(args[0], int(args[1]), int(args[2]) if len(args) > 2 else 4, args[3:] == ["drain"])
    else:
        raise SystemExit(__doc__)
