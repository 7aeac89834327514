"""K1 (acked publish) in interleaved rounds: tidings, raw aiokafka and FastStream take turns
on one Tansu broker, each round a fresh topic per contender, as in ``bench_kafka.py``.

Run: ``.venv/bin/python benchmarks/kafka_publish_rounds.py [events] [rounds]``

Prints, per contender, events/s (wall) and CPU time per event of this (the client) process
(``time.process_time``, set-up included: producer start, topic creation), then the median of
the per-round ratios for both (events/s tidings / peer, CPU per event peer / tidings: above 1
is better for tidings in both). On a shared machine the CPU figures and the
in-round ratios are the robust ones; the absolute events/s are not.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import bench_kafka as bench
from tidings.testing.kafka_broker import TansuBroker


async def main(n: int, rounds: int) -> None:
    with TansuBroker() as broker:
        runs: dict[str, tuple[Callable[[str, int], Awaitable[float]], str]] = {
            "tidings": (bench.tidings_publish, broker.url),
            "raw aiokafka": (bench.raw_publish, broker.bootstrap),
            "FastStream": (bench.fs_publish, broker.bootstrap),
        }
        rates: dict[str, list[float]] = {name: [] for name in runs}
        cpus: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(rounds):
            for name, (run, url) in runs.items():
                start = time.process_time()
                rates[name].append(await run(url, n))
                cpus[name].append((time.process_time() - start) / n * 1e6)
    print(f"publish (acked), {n:,} events, {rounds} interleaved rounds")
    for name in runs:
        rate = ", ".join(f"{r:,.0f}" for r in rates[name])
        cpu = ", ".join(f"{c:.1f}" for c in cpus[name])
        print(f"  {name}: events/s {rate}; CPU µs/event {cpu}")
    for peer in ("raw aiokafka", "FastStream"):
        wall = statistics.median(t / p for t, p in zip(rates["tidings"], rates[peer], strict=True))
        cpu = statistics.median(p / t for t, p in zip(cpus["tidings"], cpus[peer], strict=True))
        print(
            f"  vs {peer} (median of rounds): events/s tidings/{peer} {wall:.2f}x; "
            f"CPU per event {peer}/tidings {cpu:.2f}x (above 1: tidings cheaper)"
        )


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(int(args[0]) if args else 20_000, int(args[1]) if len(args) > 1 else 5))
