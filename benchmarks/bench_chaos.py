"""The fault proxy's own cost with no fault active: NATS publishes with acks, direct and
through :class:`tidings.chaos.FaultProxy`, side by side on one nats-server.

Run: ``.venv/bin/python benchmarks/bench_chaos.py [--events 20000] [--rounds 5]``

Each round publishes N events with a server ack for every one (``NatsTransport.send``,
window 1024, then ``flush``) on a fresh stream, once over a direct connection and once
through a proxy in front of the same server, in alternating order (direct first in even
rounds, proxied first in odd ones), so that load from other work on the machine falls on
both alike. Two placements of the proxy: in the publisher's own event loop (as in a
pytest), and in a separate process (as in front of a service). The figure of each is the
median of the rounds; the proxy's cost is the median over rounds of proxied / direct in the
same round (target: >= 0.90).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import statistics
import time
from dataclasses import dataclass
from typing import Any

import tidings
from _harness import Row
from tidings.chaos import FaultProxy
from tidings.clock import HybridClock
from tidings.event import Envelope
from tidings.testing.nats_server import NatsServer
from tidings.transports.nats import NatsTransport, StreamSettings


@tidings.event("bench.chaos")
@dataclass(frozen=True)
class Payment:
    payment_id: str
    amount: float


_streams = itertools.count(1)


def _envelopes(n: int) -> list[Envelope[Payment]]:
    clock = HybridClock()
    return [
        Envelope(
            "bench.chaos", Payment(f"p-{i}", 9.5), clock.now(), None, "bench", {}, None, clock.node
        )
        for i in range(n)
    ]


async def publish(url: str, n: int) -> float:
    """Events/s of ``n`` acked publishes to ``url`` on a fresh stream."""
    k = next(_streams)
    envelopes = _envelopes(n)
    async with NatsTransport(
        url, prefix=f"c{k}", stream=StreamSettings(name=f"C{k}", storage="memory"), window=1024
    ) as transport:
        start = time.perf_counter()
        for env in envelopes:
            await transport.send(env)
        failed = await transport.flush(120)
        elapsed = time.perf_counter() - start
    assert failed == 0
    return n / elapsed


def _proxy_process(port: int, ready: Any, stop: Any) -> None:
    async def serve() -> None:
        async with FaultProxy(("127.0.0.1", port)) as proxy:
            ready.put(proxy.port)
            await asyncio.to_thread(stop.wait)

    asyncio.run(serve())


async def measure(events: int, rounds: int) -> dict[str, float]:
    results: dict[str, list[float]] = {"direct": [], "in-loop": [], "direct/p": [], "process": []}
    with NatsServer(name="bench-chaos") as server:
        await publish(server.url, min(events, 2000))  # warm up the server
        async with FaultProxy(("127.0.0.1", server.port)) as proxy:
            proxied = f"nats://{proxy.address}"
            for r in range(rounds):
                order = [("direct", server.url), ("in-loop", proxied)]
                for label, url in order if r % 2 == 0 else order[::-1]:
                    results[label].append(await publish(url, events))
        context = multiprocessing.get_context("spawn")
        ready, stop = context.Queue(), context.Event()
        child = context.Process(target=_proxy_process, args=(server.port, ready, stop))
        child.start()
        try:
            proxied = f"nats://127.0.0.1:{ready.get(timeout=30)}"
            for r in range(rounds):
                order = [("direct/p", server.url), ("process", proxied)]
                for label, url in order if r % 2 == 0 else order[::-1]:
                    results[label].append(await publish(url, events))
        finally:
            stop.set()
            child.join(10)
            if child.is_alive():
                child.kill()
    figures = {label: statistics.median(values) for label, values in results.items()}
    # Paired: each round's proxied figure over the direct one of the same round.
    for label, base in (("in-loop", "direct"), ("process", "direct/p")):
        figures[f"{label} ratio"] = statistics.median(
            p / d for p, d in zip(results[label], results[base], strict=True)
        )
    return figures


def run(quick: bool = False) -> list[Row]:
    """Rows for ``benchmarks/run.py``: X1 (proxy in the publisher's loop) and X2 (proxy in
    its own process), each against a direct connection measured in the same rounds."""
    events, rounds = (2_000, 2) if quick else (20_000, 5)
    figures = asyncio.run(measure(events, rounds))
    note = f"NATS publish with acks, {events:,} events, median of {rounds} interleaved rounds"
    return [
        Row("X1", "direct connection", "events/s", figures["direct"], "/s", note),
        Row(
            "X1",
            "tidings",
            "events/s",
            figures["in-loop"],
            "/s",
            "proxy in the publisher's loop",
            {"paired ratio": figures["in-loop ratio"]},
        ),
        Row("X2", "direct connection", "events/s", figures["direct/p"], "/s", note),
        Row(
            "X2",
            "tidings",
            "events/s",
            figures["process"],
            "/s",
            "proxy in its own process",
            {"paired ratio": figures["process ratio"]},
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    figures = asyncio.run(measure(args.events, args.rounds))
    print(f"{args.events:,} acked publishes, median of {args.rounds} interleaved rounds")
    print("| placement | direct | through the proxy | proxied/direct (paired median) |")
    print("|---|---:|---:|---:|")
    for label, direct, proxied, ratio in (
        (
            "in the publisher's loop",
            figures["direct"],
            figures["in-loop"],
            figures["in-loop ratio"],
        ),
        ("in its own process", figures["direct/p"], figures["process"], figures["process ratio"]),
    ):
        print(f"| {label} | {direct:,.0f} | {proxied:,.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
