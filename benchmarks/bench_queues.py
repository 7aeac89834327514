"""Cross-thread throughput of tidings.RingBuffer against queue.Queue.

Run: ``python benchmarks/bench_queues.py [--items N] [--repeat R]``. Prints items per second
for 1 producer / 1 consumer and 4 / 4 threads, one item at a time and in batches; each figure
is the best of ``--repeat`` runs. The machine's other load moves the figures: compare rows of
one run, not runs.
"""

from __future__ import annotations

import argparse
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from tidings.exceptions import QueueClosedError
from tidings.queues import RingBuffer

CAPACITY = 1024
BATCH = 256
_DONE = object()


class Case:
    """How one queue is made, fed, drained and told that the producers are done."""

    def __init__(
        self,
        label: str,
        make: Callable[[], Any],
        produce: Callable[[Any, int], None],
        consume: Callable[[Any], None],
        finish: Callable[[Any, int], None],
    ) -> None:
        self.label = label
        self.make = make
        self.produce = produce
        self.consume = consume
        self.finish = finish

    def run(self, n_prod: int, n_cons: int, per_producer: int) -> float:
        """Seconds for ``n_prod`` threads to pass ``per_producer`` items each to ``n_cons``."""
        q = self.make()
        left = [n_prod]
        lock = threading.Lock()

        def produce() -> None:
            self.produce(q, per_producer)
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    self.finish(q, n_cons)

        threads = [threading.Thread(target=self.consume, args=(q,)) for _ in range(n_cons)]
        threads += [threading.Thread(target=produce) for _ in range(n_prod)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - start


def _stdlib_produce(q: queue.Queue[object], count: int) -> None:
    put = q.put
    for i in range(count):
        put(i)


def _stdlib_consume(q: queue.Queue[object]) -> None:
    get = q.get
    while get() is not _DONE:
        pass


def _stdlib_finish(q: queue.Queue[object], n_cons: int) -> None:
    for _ in range(n_cons):
        q.put(_DONE)


def _ring_produce(q: RingBuffer[int], count: int) -> None:
    put = q.put
    for i in range(count):
        put(i)


def _ring_consume(q: RingBuffer[int]) -> None:
    get = q.get
    try:
        while True:
            get()
    except QueueClosedError:
        pass


def _ring_produce_many(q: RingBuffer[int], count: int) -> None:
    put_many = q.put_many
    chunk = list(range(BATCH))
    for _ in range(count // BATCH):
        put_many(chunk)


def _ring_consume_many(q: RingBuffer[int]) -> None:
    get_many = q.get_many
    try:
        while True:
            get_many(BATCH)
    except QueueClosedError:
        pass


def _ring_finish(q: RingBuffer[int], n_cons: int) -> None:
    q.close()


CASES = (
    Case(
        "queue.Queue put/get",
        lambda: queue.Queue(CAPACITY),
        _stdlib_produce,
        _stdlib_consume,
        _stdlib_finish,
    ),
    Case(
        "RingBuffer put/get",
        lambda: RingBuffer[int](CAPACITY),
        _ring_produce,
        _ring_consume,
        _ring_finish,
    ),
    Case(
        f"RingBuffer put_many/get_many({BATCH})",
        lambda: RingBuffer[int](CAPACITY),
        _ring_produce_many,
        _ring_consume_many,
        _ring_finish,
    ),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=400_000, help="items per run")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'case':36s} {'1P/1C items/s':>14s} {'4P/4C items/s':>14s}")
    rows = []
    for case in CASES:
        rates = []
        for n in (1, 4):
            per = args.items // n // BATCH * BATCH
            best = min(case.run(n, n, per) for _ in range(args.repeat))
            rates.append(per * n / best)
        rows.append(rates)
        print(f"{case.label:36s} {rates[0]:14,.0f} {rates[1]:14,.0f}")
    base = rows[0]
    for case, rates in zip(CASES[1:], rows[1:], strict=True):
        ratio = ", ".join(f"{r / b:.1f}x" for r, b in zip(rates, base, strict=True))
        print(f"{case.label} vs queue.Queue: {ratio}")


if __name__ == "__main__":
    main()
