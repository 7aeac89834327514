"""K1 (acked publish) A/B across source trees in one run: tidings from two trees and raw
aiokafka, each in a worker process of its own, rounds interleaved on one Tansu broker.

``python _kafka_publish_ab.py ROUNDS EVENTS SRC_A SRC_B``: starts a Tansu broker, then
three workers (``bench_kafka.py``'s K1 contenders: tidings with ``PYTHONPATH=SRC_A``,
tidings with ``PYTHONPATH=SRC_B``, raw aiokafka), each set up once and warmed up; then
ROUNDS rounds of EVENTS events, each in ``bench_kafka.K1_SLICES`` slices interleaved
slice by slice as ``bench_kafka.py`` runs K1 (the order rotating), one worker publishing at
a time (the others wait on their pipe). Each worker times its own slices (wall clock and
the client process's CPU time, after ``gc.collect()``, its events built before the clock);
a round's figure is the sum over its slices.
Prints each round, then the medians of the per-round ratios (B/A, A/raw, B/raw; events/s
and CPU per event), so that A and B are compared under the same load at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import bench_kafka

HERE = Path(__file__).resolve().parent


async def worker(side: str, url: str, bootstrap: str) -> None:
    """Serve slices: for each ``round N`` line on stdin, N events timed; ``wall cpu`` out."""
    bench = bench_kafka
    setup: contextlib.AbstractAsyncContextManager[bench.Contender] = (
        bench.tidings_contender(url, bootstrap, 0)
        if side == "tidings"
        else bench.raw_contender(bootstrap, 0)
    )
    loop = asyncio.get_running_loop()
    async with setup as contender:
        await contender.prepare(bench.WARMUP)()
        print("ready", flush=True)
        while (line := await loop.run_in_executor(None, sys.stdin.readline)).startswith("round"):
            run_round = contender.prepare(int(line.split()[1]))
            gc.collect()
            wall, cpu = time.perf_counter(), time.process_time()
            await run_round()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(f"{wall} {cpu}", flush=True)


def main(rounds: int, n: int, src_a: str, src_b: str) -> None:
    from tidings.testing.kafka_broker import TansuBroker

    sides = {"A": ("tidings", src_a), "B": ("tidings", src_b), "raw": ("raw", src_b)}
    with TansuBroker() as broker:
        workers = {}
        for name, (side, src) in sides.items():
            env = dict(os.environ, PYTHONPATH=f"{src}{os.pathsep}{HERE}")
            workers[name] = subprocess.Popen(
                [sys.executable, __file__, "worker", side, broker.url, broker.bootstrap],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            assert workers[name].stdout.readline().strip() == "ready"  # type: ignore[union-attr]
        taken: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
        names = list(sides)
        try:
            slices = bench_kafka.K1_SLICES
            for r in range(rounds):
                sums = dict.fromkeys(names, (0.0, 0.0))
                for part in range(slices):
                    turn = r * slices + part
                    order = names[turn % 3 :] + names[: turn % 3]
                    if turn % 2:
                        order.reverse()
                    size = n // slices + (part < n % slices)
                    for name in order:
                        proc = workers[name]
                        proc.stdin.write(f"round {size}\n")  # type: ignore[union-attr]
                        proc.stdin.flush()  # type: ignore[union-attr]
                        line = proc.stdout.readline()  # type: ignore[union-attr]
                        wall, cpu = map(float, line.split())
                        sums[name] = (sums[name][0] + wall, sums[name][1] + cpu)
                for name in names:
                    taken[name].append(sums[name])
                print(
                    f"round {r}: "
                    + ", ".join(
                        f"{k} {n / taken[k][-1][0]:,.0f}/s {taken[k][-1][1] / n * 1e6:.2f}µs"
                        for k in names
                    ),
                    flush=True,
                )
        finally:
            for proc in workers.values():
                proc.stdin.close()  # type: ignore[union-attr]
                proc.wait(60)

    def ratio(x: str, y: str, index: int) -> float:
        pairs = zip(taken[x], taken[y], strict=True)
        return statistics.median(b[index] / a[index] for a, b in pairs)

    print(f"\n{rounds} rounds of {n:,} events; medians of per-round ratios")
    for x, y in (("B", "A"), ("A", "raw"), ("B", "raw")):
        # events/s x/y = wall y / wall x; CPU per event y/x (above 1: x spends less)
        print(
            f"  {x}/{y}: events/s {ratio(x, y, 0):.3f}x, CPU per event {y}/{x} {ratio(x, y, 1):.3f}x"
        )
    for name in names:
        cpu = statistics.median(c / n * 1e6 for _, c in taken[name])
        rate = statistics.median(n / w for w, _ in taken[name])
        print(f"  {name}: median {rate:,.0f} events/s, {cpu:.2f} CPU µs/event")


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        asyncio.run(worker(sys.argv[2], sys.argv[3], sys.argv[4]))
    elif len(sys.argv) == 5:
        main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        raise SystemExit(__doc__)
