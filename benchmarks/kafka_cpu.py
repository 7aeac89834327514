"""CPU time per event of the client process (Tansu runs in its own process), tidings' Kafka
transport and raw aiokafka alternating, for the cases of ``bench_kafka.py``.

Run: ``.venv/bin/python benchmarks/kafka_cpu.py pub|e2e1|e2e4 [events] [rounds]``

CPU time (``time.process_time``) is much less sensitive than wall time to other jobs on a
shared machine; it includes each case's set-up (a consumer group's join and settle time).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

import bench_kafka as bench
from tidings.testing.kafka_broker import TansuBroker


async def main(case: str, n: int, rounds: int) -> None:
    with TansuBroker() as broker:
        runs: dict[str, tuple[Callable[..., Awaitable[float]], str, tuple[int, ...]]] = {
            "tidings": (
                bench.tidings_publish if case == "pub" else bench.tidings_e2e,
                broker.url,
                () if case == "pub" else (int(case[-1]),),
            ),
            "raw aiokafka": (
                bench.raw_publish if case == "pub" else bench.raw_e2e,
                broker.bootstrap,
                () if case == "pub" else (int(case[-1]),),
            ),
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        for _ in range(rounds):
            for name, (run, url, extra) in runs.items():
                start = time.process_time()
                rate = await run(url, n, *extra)
                results[name].append(((time.process_time() - start) / n * 1e6, rate))
    for name, values in results.items():
        cpu = ", ".join(f"{c:.1f}" for c, _ in values)
        rates = ", ".join(f"{r:,.0f}" for _, r in values)
        print(f"{case} {name}: CPU µs/event {cpu}; events/s {rates}")


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(
        main(
            args[0], int(args[1]) if len(args) > 1 else 10_000, int(args[2]) if len(args) > 2 else 2
        )
    )
