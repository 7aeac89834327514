"""S5: cross-thread throughput of tidings.RingBuffer against queue.Queue.

Items per second for 1 producer / 1 consumer and 4 / 4 threads, one item at a time and in
batches; each figure is the best of a few runs, and every run checks that every item put was
got exactly once. Run alone with ``python benchmarks/bench_queues.py [--items N]`` or as part
of ``make bench``.
"""

from __future__ import annotations

import argparse
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from _harness import Row, check
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
        consume: Callable[[Any], int],
        finish: Callable[[Any, int], None],
    ) -> None:
        self.label = label
        self.make = make
        self.produce = produce
        self.consume = consume
        self.finish = finish

    def run(self, n_prod: int, n_cons: int, per_producer: int) -> float:
        """Seconds for ``n_prod`` threads to pass ``per_producer`` items each to ``n_cons``.

        Raises:
            DeliveryMismatchError: if the consumers did not get every item exactly once.
        """
        q = self.make()
        left = [n_prod]
        lock = threading.Lock()
        got: list[int] = []

        def consume() -> None:
            got.append(self.consume(q))

        def produce() -> None:
            self.produce(q, per_producer)
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    self.finish(q, n_cons)

        threads = [threading.Thread(target=consume) for _ in range(n_cons)]
        threads += [threading.Thread(target=produce) for _ in range(n_prod)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        check("S5", f"{self.label} {n_prod}/{n_cons}", sum(got), n_prod * per_producer)
        return elapsed


def _stdlib_produce(q: queue.Queue[object], count: int) -> None:
    put = q.put
    for i in range(count):
        put(i)


def _stdlib_consume(q: queue.Queue[object]) -> int:
    get = q.get
    count = 0
    while get() is not _DONE:
        count += 1
    return count


def _stdlib_finish(q: queue.Queue[object], n_cons: int) -> None:
    for _ in range(n_cons):
        q.put(_DONE)


def _ring_produce(q: RingBuffer[int], count: int) -> None:
    put = q.put
    for i in range(count):
        put(i)


def _ring_consume(q: RingBuffer[int]) -> int:
    get = q.get
    count = 0
    try:
        while True:
            get()
            count += 1
    except QueueClosedError:
        return count


def _ring_produce_many(q: RingBuffer[int], count: int) -> None:
    put_many = q.put_many
    chunk = list(range(BATCH))
    for _ in range(count // BATCH):
        put_many(chunk)


def _ring_consume_many(q: RingBuffer[int]) -> int:
    get_many = q.get_many
    count = 0
    try:
        while True:
            count += len(get_many(BATCH))
    except QueueClosedError:
        return count


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


def run(quick: bool = False, items: int = 400_000, repeat: int = 3) -> list[Row]:
    """S5 rows: each case at 1/1 and 4/4 threads."""
    if quick:
        items, repeat = items // 10, 1
    rows = []
    for case in CASES:
        for n in (1, 4):
            per = items // n // BATCH * BATCH
            best = min(case.run(n, n, per) for _ in range(repeat))
            library = "queue.Queue" if case.label.startswith("queue") else "tidings"
            rows.append(Row(f"S5 {n}P/{n}C", library, "items/s", per * n / best, "/s", case.label))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=400_000, help="items per run")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for row in run(items=args.items, repeat=args.repeat):
        print(f"{row.note:44s} {row.value:14,.0f} items/s")


if __name__ == "__main__":
    main()
