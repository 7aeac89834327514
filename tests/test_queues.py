"""Unit tests of :class:`tidings.queues.RingBuffer`: every method, every policy at its edge."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tidings.exceptions import QueueClosedError, QueueFullError, TidingsError, WouldBlock
from tidings.queues import Overflow, QueueStatistics, RingBuffer

WAIT = 10.0  # the most any test waits for anything, in seconds


def contents(q: RingBuffer[Any]) -> list[Any]:
    """Drain ``q`` without waiting and return what it held."""
    if not len(q):
        return []
    return q.get_many_nowait(q.capacity)


def filled(capacity: int, overflow: Overflow, items: list[int], name: str = "q") -> RingBuffer[int]:
    q: RingBuffer[int] = RingBuffer(capacity, overflow=overflow, name=name)
    for item in items:
        q.put_nowait(item)
    return q


def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` (a state of the queue, not a guess of time) until it holds."""
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.0005)


async def await_until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.0005)


def consumers(q: RingBuffer[Any]) -> Callable[[], bool]:
    return lambda: q.statistics().waiting_consumers == 1


def producers(q: RingBuffer[Any]) -> Callable[[], bool]:
    return lambda: q.statistics().waiting_producers == 1


class Outcome:
    """Run a call in a thread and keep what it returned or raised."""

    def __init__(self, call: Callable[[], object]) -> None:
        self.value: object = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], object]) -> None:
        try:
            self.value = call()
        except BaseException as exc:
            self.error = exc

    def result(self) -> object:
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), "the call did not return"
        if self.error is not None:
            raise self.error
        return self.value


# ---------------------------------------------------------------------- construction


@pytest.mark.parametrize("capacity", [0, -1, True, 1.5, "3"])
def test_capacity_must_be_a_positive_int(capacity: Any) -> None:
    with pytest.raises(ValueError, match="capacity"):
        RingBuffer(capacity)


def test_overflow_must_be_known() -> None:
    with pytest.raises(ValueError, match="drop_oldest"):
        RingBuffer(3, overflow="drop_random")  # type: ignore[arg-type]


def test_properties_and_repr() -> None:
    q: RingBuffer[int] = RingBuffer(3, overflow="drop_newest", name="audit")
    assert (q.capacity, q.overflow, q.name, q.closed, len(q)) == (
        3,
        "drop_newest",
        "audit",
        False,
        0,
    )
    q.put_nowait(1)
    assert len(q) == 1
    assert repr(q) == "<RingBuffer 'audit' 1/3 overflow=drop_newest open>"
    q.close()
    assert q.closed
    assert repr(q).endswith("closed>")


def test_defaults() -> None:
    q: RingBuffer[int] = RingBuffer(1)
    assert (q.overflow, q.name) == ("block", "queue")


# ---------------------------------------------------------------------- single items


def test_fifo_order() -> None:
    q = filled(5, "block", [1, 2, 3])
    assert [q.get_nowait(), q.get(), q.get(timeout=0)] == [1, 2, 3]


def test_get_nowait_on_empty_raises_would_block() -> None:
    q: RingBuffer[int] = RingBuffer(2, name="jobs")
    with pytest.raises(WouldBlock, match="'jobs' is empty"):
        q.get_nowait()
    with pytest.raises(WouldBlock):
        q.get_many_nowait(3)


def test_block_put_nowait_on_full_raises_would_block_and_stores_nothing() -> None:
    q = filled(2, "block", [1, 2], name="jobs")
    with pytest.raises(WouldBlock, match="'jobs' is full"):
        q.put_nowait(3)
    assert contents(q) == [1, 2]
    stats = q.statistics()
    assert (stats.put_count, stats.dropped) == (2, 0)


def test_drop_oldest_evicts_and_counts() -> None:
    q = filled(3, "drop_oldest", [1, 2, 3, 4, 5])
    stats = q.statistics()
    assert (stats.size, stats.put_count, stats.dropped_oldest, stats.dropped_newest) == (3, 5, 2, 0)
    assert stats.high_water == 3
    assert contents(q) == [3, 4, 5]


def test_drop_newest_discards_incoming_and_counts() -> None:
    q = filled(3, "drop_newest", [1, 2, 3, 4, 5])
    stats = q.statistics()
    assert (stats.size, stats.put_count, stats.dropped_oldest, stats.dropped_newest) == (3, 3, 0, 2)
    assert contents(q) == [1, 2, 3]


def test_error_policy_raises_typed_error_naming_the_queue() -> None:
    q = filled(2, "error", [1, 2], name="billing")
    with pytest.raises(QueueFullError, match="'billing' cannot take one more item") as info:
        q.put_nowait(3)
    assert (info.value.name, info.value.capacity) == ("billing", 2)
    assert isinstance(info.value, TidingsError)
    with pytest.raises(QueueFullError):
        q.put(3)  # the blocking variant does not wait either
    assert contents(q) == [1, 2]
    assert q.statistics().dropped == 0


@pytest.mark.parametrize("overflow", ["drop_oldest", "drop_newest"])
def test_drop_policies_never_block(overflow: Overflow) -> None:
    q = filled(1, overflow, [1])
    q.put(2)  # would wait forever if it blocked
    q.put(3, timeout=0)
    assert contents(q) == ([3] if overflow == "drop_oldest" else [1])


@pytest.mark.parametrize("overflow", ["drop_oldest", "drop_newest"])
async def test_drop_policies_never_block_async(overflow: Overflow) -> None:
    q = filled(1, overflow, [1])
    await q.aput(2)
    assert await q.aput_many([3, 4]) == (2 if overflow == "drop_oldest" else 0)
    assert contents(q) == ([4] if overflow == "drop_oldest" else [1])


async def test_error_policy_async() -> None:
    q = filled(1, "error", [1])
    with pytest.raises(QueueFullError):
        await q.aput(2)
    with pytest.raises(QueueFullError):
        await q.aput_many([2])


def test_put_and_get_timeouts() -> None:
    q: RingBuffer[int] = RingBuffer(1, name="slow")
    with pytest.raises(TimeoutError, match="'slow'"):
        q.get(timeout=0.01)
    with pytest.raises(TimeoutError):
        q.get_many(5, timeout=0)
    q.put(1, timeout=0)
    with pytest.raises(TimeoutError):
        q.put(2, timeout=0.01)
    assert q.statistics().waiting_producers == 0
    assert q.get(timeout=0) == 1


def test_negative_timeout_and_bad_max_items_are_rejected() -> None:
    q = filled(2, "block", [1, 2])
    with pytest.raises(ValueError, match="timeout"):
        q.put(3, timeout=-1)
    q.get_nowait()
    with pytest.raises(ValueError, match="timeout"):
        q.put_many([3, 4], timeout=-1)  # must wait for the second item
    with pytest.raises(ValueError, match="max_items"):
        q.get_many(0)
    with pytest.raises(ValueError, match="max_items"):
        q.get_many_nowait(-1)


async def test_aget_many_rejects_bad_max_items() -> None:
    with pytest.raises(ValueError, match="max_items"):
        await RingBuffer[int](1).aget_many(0)


def test_blocking_put_waits_for_room() -> None:
    q = filled(1, "block", [1])
    putter = Outcome(lambda: q.put(2, timeout=WAIT))
    wait_until(producers(q))
    assert q.get_nowait() == 1
    assert putter.result() is None
    assert q.get_nowait() == 2


def test_blocking_get_waits_for_an_item() -> None:
    q: RingBuffer[str] = RingBuffer(1)
    getter = Outcome(lambda: q.get(timeout=WAIT))
    wait_until(consumers(q))
    q.put_nowait("x")
    assert getter.result() == "x"


async def test_aput_and_aget_wait() -> None:
    q: RingBuffer[int] = RingBuffer(1)
    getter = asyncio.create_task(q.aget())
    await await_until(consumers(q))
    await q.aput(1)
    assert await getter == 1
    await q.aput(2)
    putter = asyncio.create_task(q.aput(3))
    await await_until(producers(q))
    assert await q.aget() == 2
    await putter
    assert await q.aget() == 3


# ---------------------------------------------------------------------- batches


def test_put_many_fits() -> None:
    q: RingBuffer[int] = RingBuffer(4)
    assert q.put_many(iter([1, 2, 3])) == 3  # any iterable
    assert q.put_many([]) == 0
    assert q.statistics().put_count == 3
    assert contents(q) == [1, 2, 3]


def test_put_many_block_timeout_keeps_the_stored_prefix() -> None:
    q = filled(4, "block", [1, 2])
    with pytest.raises(TimeoutError) as info:
        q.put_many([3, 4, 5, 6], timeout=0)
    assert "2 of the batch's 4 items were stored" in info.value.__notes__
    assert contents(q) == [1, 2, 3, 4]


def test_put_many_block_larger_than_capacity_goes_through_in_pieces() -> None:
    q: RingBuffer[int] = RingBuffer(3)
    putter = Outcome(lambda: q.put_many(range(10), timeout=WAIT))
    got: list[int] = []
    while len(got) < 10:
        got += q.get_many(10, timeout=WAIT)
    assert putter.result() == 10
    assert got == list(range(10))
    assert q.statistics().high_water == 3


def test_put_many_drop_oldest_evicts_oldest() -> None:
    q = filled(4, "drop_oldest", [1, 2])
    assert q.put_many([3, 4, 5]) == 3
    stats = q.statistics()
    assert (stats.put_count, stats.dropped_oldest, stats.high_water) == (5, 1, 4)
    assert contents(q) == [2, 3, 4, 5]


def test_put_many_drop_oldest_batch_larger_than_capacity_keeps_its_tail() -> None:
    q = filled(4, "drop_oldest", [1, 2])
    assert q.put_many(range(10, 16)) == 6
    stats = q.statistics()
    # the two old items and the batch's first two are evicted
    assert (stats.size, stats.put_count, stats.dropped_oldest) == (4, 8, 4)
    assert contents(q) == [12, 13, 14, 15]


def test_put_many_drop_newest_keeps_what_fits() -> None:
    q = filled(4, "drop_newest", [1, 2])
    assert q.put_many([3, 4, 5, 6]) == 2
    stats = q.statistics()
    assert (stats.put_count, stats.dropped_newest, stats.dropped_oldest) == (4, 2, 0)
    assert contents(q) == [1, 2, 3, 4]
    assert q.put_many([7]) == 1


def test_put_many_error_is_all_or_nothing() -> None:
    q = filled(4, "error", [1, 2], name="ledger")
    with pytest.raises(QueueFullError, match="'ledger' cannot take 3 more items") as info:
        q.put_many([3, 4, 5])
    assert (info.value.name, info.value.capacity) == ("ledger", 4)
    assert q.statistics().put_count == 2
    assert q.put_many([3, 4]) == 2
    assert contents(q) == [1, 2, 3, 4]
    with pytest.raises(QueueFullError):
        q.put_many(range(5))  # larger than the capacity: never fits
    assert len(q) == 0


def test_get_many_returns_what_is_there_up_to_max() -> None:
    q = filled(5, "block", [1, 2, 3, 4, 5])
    assert q.get_many_nowait(2) == [1, 2]
    assert q.get_many(10) == [3, 4, 5]
    assert q.statistics().get_count == 5


def test_get_many_waits_for_one_item_only() -> None:
    q: RingBuffer[int] = RingBuffer(5)
    getter = Outcome(lambda: q.get_many(5, timeout=WAIT))
    wait_until(consumers(q))
    q.put_nowait(1)
    assert getter.result() == [1]


async def test_aget_many_and_aput_many() -> None:
    q: RingBuffer[int] = RingBuffer(2)
    getter = asyncio.create_task(q.aget_many(5))
    await await_until(consumers(q))
    assert await q.aput_many([1]) == 1
    assert await getter == [1]
    putter = asyncio.create_task(q.aput_many([2, 3, 4, 5]))
    got: list[int] = []
    while len(got) < 4:
        got += await q.aget_many(3)
    assert await putter == 4
    assert got == [2, 3, 4, 5]


# ---------------------------------------------------------------------- statistics


def test_statistics_snapshot() -> None:
    q = filled(3, "drop_oldest", [1, 2, 3, 4], name="s")
    q.get_nowait()
    stats = q.statistics()
    assert stats == QueueStatistics(
        name="s",
        overflow="drop_oldest",
        size=2,
        capacity=3,
        high_water=3,
        put_count=4,
        get_count=1,
        dropped_oldest=1,
        dropped_newest=0,
        waiting_producers=0,
        waiting_consumers=0,
        closed=False,
    )
    assert stats.dropped == 1
    assert stats.size == stats.put_count - stats.get_count - stats.dropped_oldest
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.size = 0  # type: ignore[misc]


async def test_statistics_count_waiting_threads_and_tasks() -> None:
    q: RingBuffer[int] = RingBuffer(2)
    thread_getter = Outcome(lambda: q.get(timeout=WAIT))
    task_getter = asyncio.create_task(q.aget())
    await await_until(lambda: q.statistics().waiting_consumers == 2)
    q.put_many([1, 2])
    assert {await task_getter, await asyncio.to_thread(thread_getter.result)} == {1, 2}
    assert q.statistics().waiting_consumers == 0
    q.put_many([3, 4])
    task_putter = asyncio.create_task(q.aput(5))
    thread_putter = Outcome(lambda: q.put(6, timeout=WAIT))
    await await_until(lambda: q.statistics().waiting_producers == 2)
    q.close()
    with pytest.raises(QueueClosedError):
        await task_putter
    with pytest.raises(QueueClosedError):
        await asyncio.to_thread(thread_putter.result)
    assert q.statistics().waiting_producers == 0
    assert contents(q) == [3, 4]


# ---------------------------------------------------------------------- close


def test_close_is_idempotent_and_refuses_puts() -> None:
    q = filled(3, "drop_oldest", [1])
    q.close()
    q.close()
    puts: list[Callable[[], object]] = [
        lambda: q.put(2),
        lambda: q.put_nowait(2),
        lambda: q.put_many([2]),
        lambda: q.put_many([]),
    ]
    for put in puts:
        with pytest.raises(QueueClosedError, match="is closed; it accepts no more items"):
            put()
    assert q.statistics().closed
    assert q.get_nowait() == 1


async def test_closed_async_puts_raise() -> None:
    q: RingBuffer[int] = RingBuffer(3)
    q.close()
    with pytest.raises(QueueClosedError):
        await q.aput(1)
    with pytest.raises(QueueClosedError):
        await q.aput_many([1])


@pytest.mark.parametrize(
    "get",
    [
        lambda q: q.get_nowait(),
        lambda q: q.get(),
        lambda q: q.get_many(5),
        lambda q: q.get_many_nowait(5),
    ],
)
def test_gets_drain_a_closed_queue_then_raise(get: Callable[[RingBuffer[int]], object]) -> None:
    q = filled(3, "block", [1, 2])
    q.close()
    got = get(q)
    if not isinstance(got, list):
        got = [got, get(q)]
    assert got == [1, 2]
    with pytest.raises(QueueClosedError, match="is closed and every item has been got"):
        get(q)


async def test_async_gets_drain_a_closed_queue_then_raise() -> None:
    q = filled(3, "block", [1, 2, 3])
    q.close()
    assert await q.aget() == 1
    assert await q.aget_many(5) == [2, 3]
    with pytest.raises(QueueClosedError):
        await q.aget()
    with pytest.raises(QueueClosedError):
        await q.aget_many(1)


@pytest.mark.parametrize("batch", [False, True])
def test_close_wakes_blocked_threads(batch: bool) -> None:
    empty: RingBuffer[int] = RingBuffer(1)
    full = filled(1, "block", [0])
    getters = [
        Outcome(lambda: empty.get_many(2, timeout=WAIT) if batch else empty.get(timeout=WAIT))
        for _ in range(3)
    ]
    putters = [
        Outcome(lambda: full.put_many([1, 2], timeout=WAIT) if batch else full.put(1, timeout=WAIT))
        for _ in range(3)
    ]
    wait_until(lambda: empty.statistics().waiting_consumers == 3)
    wait_until(lambda: full.statistics().waiting_producers == 3)
    empty.close()
    full.close()
    for outcome in getters + putters:
        with pytest.raises(QueueClosedError):
            outcome.result()
    assert full.get_nowait() == 0


@pytest.mark.parametrize("batch", [False, True])
async def test_close_wakes_waiting_tasks(batch: bool) -> None:
    empty: RingBuffer[int] = RingBuffer(1)
    full = filled(1, "block", [0])
    getters = [asyncio.create_task(empty.aget_many(2) if batch else empty.aget()) for _ in range(3)]
    putters = [
        asyncio.create_task(full.aput_many([1, 2]) if batch else full.aput(1)) for _ in range(3)
    ]
    await await_until(lambda: empty.statistics().waiting_consumers == 3)
    await await_until(lambda: full.statistics().waiting_producers == 3)
    empty.close()
    full.close()
    results = await asyncio.gather(*getters, *putters, return_exceptions=True)
    assert all(isinstance(r, QueueClosedError) for r in results)


def test_close_from_another_thread_wakes_tasks() -> None:
    q: RingBuffer[int] = RingBuffer(1)

    async def main() -> BaseException | int:
        getter = asyncio.create_task(q.aget())
        await await_until(consumers(q))
        await asyncio.to_thread(q.close)
        return (await asyncio.gather(getter, return_exceptions=True))[0]

    assert isinstance(asyncio.run(main()), QueueClosedError)


def test_close_wakes_a_blocked_put_many_with_a_note() -> None:
    q = filled(3, "block", [1])
    putter = Outcome(lambda: q.put_many([2, 3, 4, 5], timeout=WAIT))
    wait_until(producers(q))
    q.close()
    with pytest.raises(QueueClosedError) as info:
        putter.result()
    assert "2 of the batch's 4 items were stored" in info.value.__notes__
    assert contents(q) == [1, 2, 3]


# ---------------------------------------------------------------------- cancellation


async def test_cancelled_aget_consumes_nothing() -> None:
    q: RingBuffer[int] = RingBuffer(2)
    getter = asyncio.create_task(q.aget())
    await await_until(consumers(q))
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    assert q.statistics().waiting_consumers == 0
    q.put_nowait(1)
    assert q.get_nowait() == 1


@pytest.mark.parametrize("batch", [False, True])
async def test_aget_cancelled_after_its_wake_up_passes_it_on(batch: bool) -> None:
    q: RingBuffer[int] = RingBuffer(2)
    first = asyncio.create_task(q.aget_many(2) if batch else q.aget())
    second = asyncio.create_task(q.aget_many(2) if batch else q.aget())
    await await_until(lambda: q.statistics().waiting_consumers == 2)
    q.put_nowait(1)  # wakes `first` only
    first.cancel()  # before it could run and take the item
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, WAIT) == ([1] if batch else 1)
    stats = q.statistics()
    assert (stats.get_count, stats.size, stats.waiting_consumers) == (1, 0, 0)


async def test_timed_out_aget_consumes_nothing() -> None:
    q: RingBuffer[int] = RingBuffer(2)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await q.aget()
    q.put_nowait(7)
    assert q.get_nowait() == 7
    assert q.statistics().get_count == 1


async def test_cancelled_aput_stores_nothing() -> None:
    q = filled(1, "block", [1])
    putter = asyncio.create_task(q.aput(2))
    await await_until(producers(q))
    putter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await putter
    assert contents(q) == [1]
    stats = q.statistics()
    assert (stats.put_count, stats.waiting_producers) == (1, 0)


async def test_aput_cancelled_after_its_wake_up_passes_it_on() -> None:
    q = filled(1, "block", [0])
    first = asyncio.create_task(q.aput(1))
    second = asyncio.create_task(q.aput(2))
    await await_until(lambda: q.statistics().waiting_producers == 2)
    assert q.get_nowait() == 0  # wakes `first` only
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, WAIT)
    assert contents(q) == [2]


async def test_cancelled_aput_many_keeps_the_stored_prefix() -> None:
    q = filled(3, "block", [0])
    putter = asyncio.create_task(q.aput_many([1, 2, 3, 4]))
    await await_until(producers(q))
    putter.cancel()
    with pytest.raises(asyncio.CancelledError) as info:
        await putter
    assert "2 of the batch's 4 items were stored" in info.value.__notes__
    assert contents(q) == [0, 1, 2]
    assert q.statistics().waiting_producers == 0


def test_timed_out_thread_getter_leaves_no_trace() -> None:
    q: RingBuffer[int] = RingBuffer(2)
    with pytest.raises(TimeoutError):
        q.get(timeout=0.001)
    q.put_nowait(1)  # must not be swallowed by a stale waiter
    assert q.statistics().waiting_consumers == 0
    assert q.get(timeout=0) == 1


# ---------------------------------------------------------------------- loops and threads


def test_async_waiter_on_another_loop_is_woken_thread_safely() -> None:
    q: RingBuffer[int] = RingBuffer(4)
    results: list[list[int]] = []

    def run_loop() -> None:
        async def consume() -> None:
            got: list[int] = []
            while len(got) < 100:
                got += await q.aget_many(10)
            results.append(got)

        asyncio.run(asyncio.wait_for(consume(), WAIT))

    consumer = Outcome(run_loop)
    for i in range(100):
        q.put(i, timeout=WAIT)
    consumer.result()
    assert results == [list(range(100))]


def test_waking_a_task_on_a_closed_loop_skips_it() -> None:
    q: RingBuffer[int] = RingBuffer(1)
    loop = asyncio.new_event_loop()
    coro = q.aget()
    task = loop.create_task(coro)
    loop.run_until_complete(await_until(consumers(q)))
    loop.close()  # with the task still waiting: it will never run again
    getter = Outcome(lambda: q.get(timeout=WAIT))
    wait_until(lambda: q.statistics().waiting_consumers == 2)
    q.put_nowait(1)  # the dead task cannot take it; the thread must be woken instead
    assert getter.result() == 1
    assert not task.done()
    coro.close()  # what the garbage collector would do: the waiter leaves without a trace
    assert q.statistics().waiting_consumers == 0
    q.put_nowait(2)
    assert q.get_nowait() == 2


@pytest.mark.parametrize("lock_busy", [False, True])
def test_task_destroyed_while_waiting_never_takes_a_wake_up(lock_busy: bool) -> None:
    q: RingBuffer[int] = RingBuffer(1)
    loop = asyncio.new_event_loop()
    coro = q.aget()
    task = loop.create_task(coro)
    loop.run_until_complete(await_until(consumers(q)))
    getter = Outcome(lambda: q.get(timeout=WAIT))
    wait_until(lambda: q.statistics().waiting_consumers == 2)
    # Destroyed while waiting, its loop still open but never run again; perhaps by the garbage
    # collector while the lock is held (by this very thread).
    if lock_busy:
        q._lock.acquire()
    coro.close()
    if lock_busy:
        q._lock.release()
    q.put_nowait(1)
    assert getter.result() == 1
    assert q.statistics().waiting_consumers == (1 if lock_busy else 0)
    assert not task.done()
    loop.close()
