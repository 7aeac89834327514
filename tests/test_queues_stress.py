"""Concurrency stress of RingBuffer: threads, tasks and both, every item exactly once, in order.

Bounded in count and in time: every wait has a timeout, and nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from collections.abc import Callable

import pytest

from tidings.exceptions import QueueClosedError
from tidings.queues import Overflow, RingBuffer

WAIT = 30.0  # the most any single wait may take, in seconds
PRODUCERS = 4
CONSUMERS = 4

Item = tuple[int, int]  # (producer id, sequence number)

pytestmark = pytest.mark.slow


def items_of(producer: int, count: int) -> list[Item]:
    return [(producer, seq) for seq in range(count)]


def chunks(items: list[Item], seed: int) -> list[list[Item]]:
    """Cut ``items`` into batches of random sizes (1 to 64)."""
    rng = random.Random(seed)
    out: list[list[Item]] = []
    start = 0
    while start < len(items):
        size = rng.randint(1, 64)
        out.append(items[start : start + size])
        start += size
    return out


def check_in_order(received: list[list[Item]]) -> Counter[Item]:
    """Each consumer saw each producer's items in increasing order; return what all got."""
    for got in received:
        last: dict[int, int] = {}
        for producer, seq in got:
            assert seq > last.get(producer, -1), f"producer {producer} out of order"
            last[producer] = seq
    return Counter(item for got in received for item in got)


def check_exactly_once(received: list[list[Item]], per_producer: int) -> None:
    delivered = check_in_order(received)
    expected = Counter(item for p in range(PRODUCERS) for item in items_of(p, per_producer))
    assert delivered == expected  # nothing lost, nothing duplicated


def run_threads(targets: list[Callable[[], None]]) -> None:
    """Run each target in a thread and re-raise the first failure."""
    errors: list[BaseException] = []

    def guard(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guard, args=(t,), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive(), "a thread did not finish in time"
    if errors:
        raise errors[0]


def thread_consumer(q: RingBuffer[Item], got: list[Item], batch: bool) -> Callable[[], None]:
    def consume() -> None:
        try:
            while True:
                if batch:
                    got.extend(q.get_many(32, timeout=WAIT))
                else:
                    got.append(q.get(timeout=WAIT))
        except QueueClosedError:
            pass

    return consume


def thread_producer(
    q: RingBuffer[Item], producer: int, count: int, batch: bool
) -> Callable[[], None]:
    def produce() -> None:
        if batch:
            for chunk in chunks(items_of(producer, count), seed=producer):
                q.put_many(chunk, timeout=WAIT)
        else:
            for item in items_of(producer, count):
                q.put(item, timeout=WAIT)

    return produce


async def task_consumer(q: RingBuffer[Item], got: list[Item], batch: bool) -> None:
    try:
        while True:
            if batch:
                got.extend(await q.aget_many(32))
            else:
                got.append(await q.aget())
    except QueueClosedError:
        pass


async def task_producer(q: RingBuffer[Item], producer: int, count: int, batch: bool) -> None:
    if batch:
        for chunk in chunks(items_of(producer, count), seed=producer):
            await q.aput_many(chunk)
    else:
        for item in items_of(producer, count):
            await q.aput(item)


def check_statistics(q: RingBuffer[Item], total: int) -> None:
    stats = q.statistics()
    assert (stats.put_count, stats.get_count, stats.size, stats.dropped) == (total, total, 0, 0)
    assert (stats.waiting_producers, stats.waiting_consumers) == (0, 0)
    assert stats.high_water <= stats.capacity


@pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
def test_threads_4x4_every_item_exactly_once_in_order(batch: bool) -> None:
    per_producer = 20_000
    q: RingBuffer[Item] = RingBuffer(64, name="stress")
    received: list[list[Item]] = [[] for _ in range(CONSUMERS)]
    consumers = [thread_consumer(q, got, batch) for got in received]
    producers = [thread_producer(q, p, per_producer, batch) for p in range(PRODUCERS)]

    def produce_then_close() -> None:
        run_threads(producers)
        q.close()

    run_threads([produce_then_close, *consumers])
    check_exactly_once(received, per_producer)
    check_statistics(q, PRODUCERS * per_producer)


@pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
@pytest.mark.parametrize(
    "tasks_consume", [True, False], ids=["threads-to-tasks", "tasks-to-threads"]
)
async def test_threads_and_tasks_together(tasks_consume: bool, batch: bool) -> None:
    """Thread producers with task consumers, and task producers with thread consumers."""
    per_producer = 5_000
    q: RingBuffer[Item] = RingBuffer(16)
    received: list[list[Item]] = [[] for _ in range(CONSUMERS)]
    if tasks_consume:
        thread_side = [thread_producer(q, p, per_producer, batch) for p in range(PRODUCERS)]
        task_side = [task_consumer(q, got, batch) for got in received]
    else:
        thread_side = [thread_consumer(q, got, batch) for got in received]
        task_side = [task_producer(q, p, per_producer, batch) for p in range(PRODUCERS)]
    threads = asyncio.ensure_future(asyncio.to_thread(run_threads, thread_side))
    tasks = asyncio.gather(*task_side)
    producing, consuming = (threads, tasks) if tasks_consume else (tasks, threads)
    await asyncio.wait_for(producing, WAIT)
    q.close()
    await asyncio.wait_for(consuming, WAIT)
    check_exactly_once(received, per_producer)
    check_statistics(q, PRODUCERS * per_producer)


def test_two_loops_and_threads_on_both_sides() -> None:
    """Producers and consumers on two event loops and in threads, all on one queue."""
    per_producer = 4_000
    q: RingBuffer[Item] = RingBuffer(8)
    received: list[list[Item]] = [[] for _ in range(CONSUMERS)]
    # producer 0 and consumer 0 are threads; 1 and 2 run on loop A; 3 runs on loop B
    done_producing = threading.Barrier(3, timeout=WAIT)

    def loop(producer_ids: list[int], consumer_ids: list[int]) -> Callable[[], None]:
        async def main() -> None:
            consumers = [
                asyncio.create_task(task_consumer(q, received[c], batch=c % 2 == 0))
                for c in consumer_ids
            ]
            await asyncio.gather(
                *(task_producer(q, p, per_producer, batch=p % 2 == 1) for p in producer_ids)
            )
            await asyncio.to_thread(done_producing.wait)
            await asyncio.gather(*consumers)

        return lambda: asyncio.run(asyncio.wait_for(main(), WAIT))

    def thread_side() -> None:
        thread_producer(q, 0, per_producer, batch=False)()
        done_producing.wait()
        q.close()

    run_threads(
        [
            thread_side,
            thread_consumer(q, received[0], batch=True),
            loop([1, 2], [1, 2]),
            loop([3], [3]),
        ]
    )
    check_exactly_once(received, per_producer)
    check_statistics(q, PRODUCERS * per_producer)


@pytest.mark.parametrize("overflow", ["drop_oldest", "drop_newest"])
def test_drop_policies_count_exactly_under_concurrency(overflow: Overflow) -> None:
    per_producer = 10_000
    q: RingBuffer[Item] = RingBuffer(8, overflow=overflow)
    received: list[list[Item]] = [[] for _ in range(2)]
    consumers = [
        thread_consumer(q, got, batch) for got, batch in zip(received, [False, True], strict=True)
    ]
    producers = [thread_producer(q, p, per_producer, p % 2 == 0) for p in range(PRODUCERS)]

    def produce_then_close() -> None:
        run_threads(producers)
        q.close()

    run_threads([produce_then_close, *consumers])
    delivered = check_in_order(received)
    assert max(delivered.values()) == 1  # nothing duplicated
    total = PRODUCERS * per_producer
    stats = q.statistics()
    assert stats.get_count == delivered.total()
    assert stats.size == 0
    assert stats.get_count + stats.dropped == total  # every item got or counted as dropped
    if overflow == "drop_oldest":
        assert (stats.put_count, stats.dropped_newest) == (total, 0)
    else:
        assert (stats.put_count, stats.dropped_oldest) == (stats.get_count, 0)


async def test_cancelling_consumers_under_load_loses_nothing() -> None:
    """Consumer tasks are cancelled at random moments while threads produce."""
    per_producer = 3_000
    q: RingBuffer[Item] = RingBuffer(4)
    received: list[list[Item]] = []
    producers = asyncio.create_task(
        asyncio.to_thread(
            run_threads, [thread_producer(q, p, per_producer, p % 2 == 0) for p in range(PRODUCERS)]
        )
    )
    rng = random.Random(7)
    while not producers.done():
        got: list[Item] = []
        received.append(got)
        consumer = asyncio.create_task(task_consumer(q, got, batch=rng.random() < 0.5))
        await asyncio.sleep(rng.random() * 0.002)  # a random moment to cancel, not a sync
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
    await producers
    q.close()
    last: list[Item] = []
    await asyncio.wait_for(task_consumer(q, last, batch=True), WAIT)
    check_exactly_once([*received, last], per_producer)
    check_statistics(q, PRODUCERS * per_producer)
