"""Acked publishing to Kafka, tidings against raw aiokafka, for callgrind: instructions per
event.

``python _callgrind_kafka_publish.py tidings|raw N`` starts a Tansu broker (its own
process: valgrind does not trace it), sets up ``bench_kafka.py``'s K1 contender of that
side (tidings: ``KafkaTransport.send`` then ``flush``; raw: ``AIOKafkaProducer.send`` of
the same records, every delivery future awaited), runs its warm-up round, then one round
of N events, and prints the client CPU µs per event of that round. Run it under ``valgrind
--tool=callgrind`` for two sizes and take ``(I(N2) - I(N1)) / (N2 - N1)``: the
instructions each side spends per published event (aiokafka's record building and
request encoding included on both), which set-up and start-up cancel out of::

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p python \\
        benchmarks/_callgrind_kafka_publish.py tidings 2000
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time

import bench_kafka as bench
from tidings.testing.kafka_broker import TansuBroker


async def publish(side: str, url: str, bootstrap: str, n: int) -> float:
    """CPU µs per event of one K1 round of ``n`` events, after the warm-up round."""
    setup: contextlib.AbstractAsyncContextManager[bench.Contender] = (
        bench.tidings_contender(url, bootstrap, 0)
        if side == "tidings"
        else bench.raw_contender(bootstrap, 0)
    )
    async with setup as contender:
        await contender.prepare(bench.WARMUP)()
        run_round = contender.prepare(n)
        start = time.process_time()
        await run_round()
        return (time.process_time() - start) / n * 1e6


def main(side: str, n: int) -> None:
    with TansuBroker() as broker:
        cpu = asyncio.run(publish(side, broker.url, broker.bootstrap, n))
    print(f"{side}: {cpu:.2f} CPU µs/event")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("tidings", "raw"):
        raise SystemExit(__doc__)
    main(sys.argv[1], int(sys.argv[2]))
