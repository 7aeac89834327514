"""Async handlers on the bus: eager start, emit, threads, shutdown, streams."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

import pytest

import tidings
from tidings import DeadLetter


@tidings.event("test.async.ping")
@dataclass(frozen=True)
class Ping:
    n: int


class BoomError(Exception):
    pass


async def test_non_suspending_coroutine_completes_inside_publish() -> None:
    async with tidings.Bus() as bus:
        done: list[int] = []

        async def handler(event: Ping) -> None:
            done.append(event.n)

        bus.subscribe(Ping, handler)
        tasks_before = asyncio.all_tasks()
        bus.publish(Ping(1))
        assert done == [1]  # ran in the publisher's call
        assert asyncio.all_tasks() == tasks_before  # and no task was created


async def test_suspending_coroutine_resumes_where_it_stopped() -> None:
    async with tidings.Bus() as bus:
        steps: list[str] = []
        gate = asyncio.Event()

        async def handler(event: Ping) -> None:
            steps.append("start")
            await gate.wait()
            steps.append("after gate")
            await asyncio.sleep(0)
            steps.append("end")

        bus.subscribe(Ping, handler)
        bus.publish(Ping(1))
        assert steps == ["start"]
        gate.set()
        report = await bus.aclose(timeout=5)
        assert report.clean
        assert steps == ["start", "after gate", "end"]


async def test_suspended_handler_sees_exceptions_and_results_of_what_it_awaits() -> None:
    async with tidings.Bus() as bus:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        seen: list[object] = []

        async def handler(event: Ping) -> None:
            try:
                await fut
            except BoomError as exc:
                seen.append(exc)
            seen.append(await asyncio.sleep(0, result="slept"))

        bus.subscribe(Ping, handler)
        bus.publish(Ping(1))
        error = BoomError("from future")
        fut.set_exception(error)
        assert (await bus.aclose(timeout=5)).clean
        assert seen == [error, "slept"]


async def test_failures_after_suspension_are_dead_lettered() -> None:
    async with tidings.Bus() as bus:
        dead: list[DeadLetter] = []
        bus.subscribe(DeadLetter, dead.append)

        async def handler(event: Ping) -> None:
            await asyncio.sleep(0)
            raise BoomError(f"late {event.n}")

        sub = bus.subscribe(Ping, handler)
        bus.publish(Ping(7))
        await bus.aclose(timeout=5)
        assert [str(d.error) for d in dead] == ["late 7"]
        assert sub.failed == 1


async def test_emit_awaits_every_handler_and_reports() -> None:
    async with tidings.Bus() as bus:

        async def slow(event: Ping) -> str:
            await asyncio.sleep(0.001)
            return f"slow {event.n}"

        def fast(event: Ping) -> str:
            return f"fast {event.n}"

        async def broken(event: Ping) -> None:
            await asyncio.sleep(0)
            raise BoomError("broken")

        def broken_sync(event: Ping) -> None:
            raise ValueError("sync broken")

        bus.subscribe(Ping, slow, priority=3)
        bus.subscribe(Ping, fast, priority=2)
        bus.subscribe(Ping, broken, priority=1)
        bus.subscribe(Ping, broken_sync, priority=0)
        bus.subscribe(Ping, fast, where=lambda e: e.n > 100)
        delivery = await bus.emit(Ping(5))
        assert delivery.results == ["slow 5", "fast 5"]
        assert [type(e) for e in delivery.errors] == [BoomError, ValueError]
        assert not delivery.ok
        assert [o.handler.rsplit(".", 1)[-1] for o in delivery.outcomes] == [
            "slow",
            "fast",
            "broken",
            "broken_sync",
        ]
        with pytest.raises(ExceptionGroup) as info:
            delivery.raise_errors()
        assert len(info.value.exceptions) == 2
        assert "2 handler(s) failed" in str(info.value)


async def test_emit_with_no_failures_raises_nothing() -> None:
    async with tidings.Bus() as bus:
        bus.subscribe(Ping, lambda e: e.n * 2)
        delivery = await bus.emit(Ping(2))
        delivery.raise_errors()
        assert delivery.ok
        assert delivery.results == [4]


async def test_emit_from_a_handler_dispatches_at_once() -> None:
    async with tidings.Bus() as bus:
        log: list[str] = []

        async def outer(event: Ping) -> None:
            if event.n == 1:
                log.append("outer before")
                await bus.emit(Ping(2))
                log.append("outer after")

        bus.subscribe(Ping, outer)
        bus.subscribe(Ping, lambda e: log.append(f"inner {e.n}"))
        await bus.emit(Ping(1))
        assert log == ["outer before", "inner 2", "outer after", "inner 1"]


async def test_async_handlers_run_on_the_loop_when_published_from_threads() -> None:
    async with tidings.Bus() as bus:
        loop_thread = threading.get_ident()
        seen_threads: set[int] = set()
        count = 0
        all_done = asyncio.Event()

        async def handler(event: Ping) -> None:
            nonlocal count
            seen_threads.add(threading.get_ident())
            count += 1
            if count == 400:
                all_done.set()

        bus.subscribe(Ping, handler)

        def work() -> None:
            for i in range(100):
                bus.publish(Ping(i))

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        await asyncio.wait_for(all_done.wait(), timeout=30)
        for t in threads:
            t.join(timeout=10)
        assert seen_threads == {loop_thread}


async def test_four_threads_with_sync_and_async_handlers_deliver_exactly_once() -> None:
    per_thread = 10_000
    async with tidings.Bus() as bus:
        sync_counts: dict[int, int] = {}
        async_counts: dict[int, int] = {}
        lock = threading.Lock()
        finished = asyncio.Event()
        expected = 4 * per_thread

        def sync_handler(event: Ping) -> None:
            with lock:
                sync_counts[event.n] = sync_counts.get(event.n, 0) + 1

        async def async_handler(event: Ping) -> None:
            if event.n % 7 == 0:
                await asyncio.sleep(0)  # some suspend, most complete eagerly
            async_counts[event.n] = async_counts.get(event.n, 0) + 1
            if len(async_counts) == expected:
                finished.set()

        bus.subscribe(Ping, sync_handler)
        bus.subscribe(Ping, async_handler)

        def work(base: int) -> None:
            for i in range(per_thread):
                bus.publish(Ping(base + i))

        threads = [threading.Thread(target=work, args=(k * per_thread,)) for k in range(4)]
        for t in threads:
            t.start()
        await asyncio.wait_for(finished.wait(), timeout=60)
        for t in threads:
            t.join(timeout=10)
        assert set(sync_counts.values()) == {1}
        assert set(async_counts.values()) == {1}
        assert len(sync_counts) == len(async_counts) == expected


async def test_aclose_reports_handlers_that_did_not_finish() -> None:
    bus = await tidings.Bus().start()
    never = asyncio.Event()
    cancelled: list[bool] = []

    async def stuck(event: Ping) -> None:
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    bus.subscribe(Ping, stuck)
    envelope = bus.publish(Ping(1))
    report = await bus.aclose(timeout=0.05)
    assert not report.clean
    assert len(report.unfinished) == 1
    assert "stuck" in report.unfinished[0]
    assert envelope.id in report.unfinished[0]
    await asyncio.sleep(0)  # let the cancellation be delivered
    assert cancelled == [True]
    with pytest.raises(tidings.BusClosedError):
        bus.publish(Ping(2))


async def test_aclose_waits_for_work_handed_over_from_threads() -> None:
    bus = await tidings.Bus().start()
    done: list[int] = []

    async def handler(event: Ping) -> None:
        await asyncio.sleep(0.001)
        done.append(event.n)

    bus.subscribe(Ping, handler)
    thread = threading.Thread(target=lambda: [bus.publish(Ping(i)) for i in range(50)])
    thread.start()
    await asyncio.to_thread(thread.join, 10)
    assert (await bus.aclose(timeout=10)).clean
    assert sorted(done) == list(range(50))


async def test_publish_inside_a_loop_binds_the_bus_without_start() -> None:
    bus = tidings.Bus()
    seen: list[int] = []

    async def handler(event: Ping) -> None:
        seen.append(event.n)

    bus.subscribe(Ping, handler)
    bus.publish(Ping(3))
    assert seen == [3]
    await bus.aclose()


async def test_reentrant_publish_from_async_handler_is_queued() -> None:
    async with tidings.Bus() as bus:
        log: list[str] = []

        async def first(event: Ping) -> None:
            if event.n == 0:
                bus.publish(Ping(1))
            log.append(f"first {event.n}")

        bus.subscribe(Ping, first)
        bus.subscribe(Ping, lambda e: log.append(f"second {e.n}"))
        bus.publish(Ping(0))
        assert log == ["first 0", "second 0", "first 1", "second 1"]


@tidings.event("test.async.pong")
@dataclass(frozen=True)
class Pong:
    n: int


async def test_emit_dispatches_what_its_handlers_publish_after_them() -> None:
    async with tidings.Bus() as bus:
        log: list[str] = []

        def first(event: Ping) -> None:
            log.append("first")
            bus.publish(Pong(event.n))

        def failing(event: Ping) -> None:
            log.append("failing")
            raise BoomError

        bus.subscribe(Ping, first, priority=3)
        bus.subscribe(Ping, failing, priority=2)
        bus.subscribe(Ping, lambda e: log.append("last"), priority=1)
        bus.subscribe(Pong, lambda e: log.append("pong"))
        bus.subscribe(DeadLetter, lambda d: log.append("dead letter"))
        delivery = await bus.emit(Ping(1))
        assert log == ["first", "failing", "last", "pong", "dead letter"]
        assert len(delivery.errors) == 1
        log.clear()
        bus.publish(Ping(2))
        assert log == ["first", "failing", "last", "pong", "dead letter"]


async def test_emit_awaiting_room_sets_its_nested_events_aside() -> None:
    async with tidings.Bus() as bus:
        log: list[str] = []
        started, gate, reached = asyncio.Event(), asyncio.Event(), asyncio.Event()

        def first(event: Ping) -> None:
            log.append(f"first {event.n}")
            bus.publish(Pong(event.n))
            if event.n == 2:
                reached.set()

        async def slow(event: Ping) -> None:
            if event.n == 0:
                started.set()
                await gate.wait()

        bus.subscribe(Ping, first, priority=2)
        bus.subscribe(Ping, slow, mode="queued", maxsize=1, priority=1)
        bus.subscribe(Ping, lambda e: log.append(f"last {e.n}"))
        bus.subscribe(Pong, lambda e: log.append(f"pong {e.n}"))
        bus.publish(Ping(0))
        await asyncio.wait_for(started.wait(), 10)  # the worker holds event 0
        bus.publish(Ping(1))  # the buffer is full again
        log.clear()
        emitting = asyncio.create_task(bus.emit(Ping(2)))
        await asyncio.wait_for(reached.wait(), 10)  # emit awaits room now
        assert log == ["first 2"]  # pong 2 waits aside, behind emit's handlers
        bus.publish(Pong(3))  # meanwhile others publish as usual, at once
        assert log == ["first 2", "pong 3"]
        gate.set()
        await asyncio.wait_for(emitting, 10)
        assert log == ["first 2", "pong 3", "last 2", "pong 2"]


async def test_stream_pulls_events_through_a_bounded_buffer() -> None:
    async with tidings.Bus() as bus:
        got: list[int] = []
        async with bus.stream(Ping, maxsize=3, overflow="drop_oldest") as events:
            for i in range(5):
                bus.publish(Ping(i))
            assert len(events) == 3
            async for event in events:
                got.append(event.n)
                if len(got) == 3:
                    break
        assert got == [2, 3, 4]  # drop_oldest kept the newest three
        assert events.dropped == 2


@pytest.mark.parametrize(("overflow", "kept"), [("drop_newest", [0, 1]), ("drop_oldest", [2, 3])])
async def test_stream_drop_policies(overflow: Any, kept: list[int]) -> None:
    async with tidings.Bus() as bus, bus.stream(Ping, maxsize=2, overflow=overflow) as events:
        for i in range(4):
            bus.publish(Ping(i))
        assert events.dropped == 2
        assert [(await anext(events)).n for _ in range(2)] == kept
        stats = bus.statistics().subscriptions[0]
        assert (stats.dropped, stats.queue_depth, stats.high_water) == (2, 0, 2)


async def test_stream_error_policy_refuses_the_publisher() -> None:
    async with tidings.Bus() as bus:
        seen: list[int] = []
        bus.subscribe(Ping, lambda e: seen.append(e.n), priority=-1)
        async with bus.stream(Ping, maxsize=1, overflow="error") as events:
            bus.publish(Ping(0))
            with pytest.raises(tidings.QueueFullError, match="cannot take one more") as info:
                bus.publish(Ping(1))
            assert "EventStream" in info.value.name
            assert seen == [0, 1]  # the other handler still got it
            assert bus.statistics().subscriptions[0].dropped == 1
            assert (await anext(events)).n == 0


async def test_stream_block_policy_waits_in_emit_and_threads_refuses_on_the_loop() -> None:
    async with tidings.Bus() as bus, bus.stream(Ping, maxsize=2) as events:
        bus.publish(Ping(0))
        bus.publish(Ping(1))
        with pytest.raises(tidings.WouldBlock, match=r"await bus\.emit"):
            bus.publish(Ping(2))  # on the loop's thread: cannot wait for our own consumer
        emitted = asyncio.ensure_future(bus.emit(Ping(3)))
        await asyncio.sleep(0)
        assert not emitted.done()  # waiting for room
        assert (await anext(events)).n == 0
        await asyncio.wait_for(emitted, timeout=5)
        thread = threading.Thread(target=lambda: bus.publish(Ping(4)))
        thread.start()
        got = [(await asyncio.wait_for(anext(events), timeout=5)).n for _ in range(3)]
        await asyncio.to_thread(thread.join, 10)
        assert got == [1, 3, 4]
        stats = bus.statistics().subscriptions[0]
        assert stats.dropped == 1  # the refused publish is counted


async def test_stream_ends_when_the_bus_closes() -> None:
    bus = await tidings.Bus().start()
    async with bus.stream("test.async.*") as events:
        bus.publish(Ping(1))

        async def consume() -> list[Any]:
            return [e async for e in events]

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0)
        await bus.aclose()
        assert await asyncio.wait_for(consumer, timeout=5) == [Ping(1)]


async def test_stream_arguments_are_checked() -> None:
    async with tidings.Bus() as bus:
        with pytest.raises(ValueError, match="maxsize must be a positive int"):
            async with bus.stream(Ping, maxsize=0):
                pass
        with pytest.raises(ValueError, match="overflow must be one of"):
            async with bus.stream(Ping, overflow="sometimes"):  # type: ignore[call-overload]
                pass


async def test_aclose_reports_only_what_a_stream_still_holds() -> None:
    bus = await tidings.Bus().start()
    async with bus.stream(Ping) as events:
        for i in range(3):
            bus.publish(Ping(i))
        assert [(await anext(events)).n for _ in range(3)] == [0, 1, 2]
    assert bus._queued == []  # the ended stream is forgotten
    async with bus.stream(Ping) as events:
        for i in range(3):
            bus.publish(Ping(i))
        assert (await anext(events)).n == 0
        report = await bus.aclose(timeout=1)
    assert report.unfinished == (
        "tidings._stream.EventStream.consume: 2 queued event(s) not handled",
    )


async def test_emit_checks_keys_and_headers_and_aclose_its_timeout() -> None:
    bus = await tidings.Bus().start()
    with pytest.raises(TypeError, match="key="):
        await bus.emit(Ping(1), key=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="headers="):
        await bus.emit(Ping(1), headers={1: "x"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="timeout= must be at least 0 seconds, not -1"):
        await bus.aclose(timeout=-1)
    with pytest.raises(TypeError, match="timeout= is a number of seconds"):
        await bus.aclose(timeout="5")  # type: ignore[arg-type]
    assert not bus.closed  # refused before anything closed
    assert (await bus.aclose(timeout=0)).clean
