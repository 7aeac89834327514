"""``await bus.emit``: the fast path for plain coroutine handlers (eager, no task unless a
handler suspends, lazily built Delivery) and the general path, with exact Delivery contents."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

import tidings
from tidings import HandlerOutcome


@tidings.event("test.emit.order")
@dataclass(frozen=True)
class Order:
    n: int


@tidings.event("test.emit.note")
@dataclass(frozen=True)
class Note:
    text: str


async def test_handlers_that_do_not_suspend_run_in_the_emitting_task_in_order() -> None:
    me = asyncio.current_task()
    log: list[tuple[str, bool]] = []

    async def first(order: Order) -> int:
        log.append(("first", asyncio.current_task() is me))
        return order.n

    async def second(order: Order) -> str:
        log.append(("second", asyncio.current_task() is me))
        return f"#{order.n}"

    async with tidings.Bus() as bus:
        a = bus.subscribe(Order, second)
        b = bus.subscribe(Order, first, priority=1)
        delivery = await bus.emit(Order(4))
        again = await bus.emit(Order(5))
    assert log == [("first", True), ("second", True)] * 2  # no task: the emitter's own
    assert delivery.outcomes == (HandlerOutcome(b.name, 4), HandlerOutcome(a.name, "#4"))
    assert (delivery.results, delivery.errors, delivery.ok) == ([4, "#4"], [], True)
    assert again.results == [5, "#5"]
    assert delivery.envelope.payload == Order(4)
    assert (a.delivered, a.failed, b.delivered, b.failed) == (2, 0, 2, 0)
    delivery.raise_errors()


async def test_a_suspending_handler_runs_on_while_the_next_ones_start() -> None:
    log: list[str] = []
    gate = asyncio.Event()

    async def quick(order: Order) -> str:
        log.append("quick")
        return "q"

    async def waits(order: Order) -> str:
        log.append("waits: start")
        await gate.wait()
        log.append("waits: end")
        return "w"

    async def last(order: Order) -> str:
        log.append("last")
        gate.set()
        return "l"

    async with tidings.Bus() as bus:
        subs = [
            bus.subscribe(Order, quick, priority=3),
            bus.subscribe(Order, waits, priority=2),
            bus.subscribe(Order, last, priority=1),
        ]
        delivery = await bus.emit(Order(1))
    assert log == ["quick", "waits: start", "last", "waits: end"]
    assert delivery.outcomes == tuple(
        HandlerOutcome(s.name, r) for s, r in zip(subs, "qwl", strict=True)
    )
    assert [s.delivered for s in subs] == [1, 1, 1]


async def test_failures_are_reported_counted_and_dead_lettered_once() -> None:
    early = ValueError("early")
    late = KeyError("late")

    async def fails_at_once(order: Order) -> None:
        raise early

    async def fails_after_suspending(order: Order) -> None:
        await asyncio.sleep(0)
        raise late

    async def fine(order: Order) -> int:
        return 7

    async with tidings.Bus() as bus:
        letters: list[tidings.DeadLetter] = []
        bus.subscribe(tidings.DeadLetter, letters.append)
        a = bus.subscribe(Order, fails_at_once, priority=3)
        b = bus.subscribe(Order, fails_after_suspending, priority=2)
        c = bus.subscribe(Order, fine, priority=1)
        delivery = await bus.emit(Order(1))
    assert delivery.outcomes == (
        HandlerOutcome(a.name, error=early),
        HandlerOutcome(b.name, error=late),
        HandlerOutcome(c.name, 7),
    )
    assert (delivery.results, delivery.errors, delivery.ok) == ([7], [early, late], False)
    assert [(s.delivered, s.failed) for s in (a, b, c)] == [(0, 1), (0, 1), (1, 0)]
    assert sorted((d.handler, d.attempts) for d in letters) == sorted([(a.name, 1), (b.name, 1)])


async def test_a_cancelled_suspended_handler_is_reported_cancelled() -> None:
    started = asyncio.Event()

    async def hangs(order: Order) -> None:
        started.set()
        await asyncio.Event().wait()

    async with tidings.Bus() as bus:
        sub = bus.subscribe(Order, hangs)
        emitting = asyncio.ensure_future(bus.emit(Order(1)))
        await started.wait()
        report = await bus.aclose(timeout=0)
        delivery = await asyncio.wait_for(emitting, 10)
    assert len(report.unfinished) == 1
    [outcome] = delivery.outcomes
    assert outcome.handler == sub.name
    assert isinstance(outcome.error, asyncio.CancelledError)


async def test_what_handlers_publish_is_dispatched_after_every_handler_started() -> None:
    log: list[str] = []

    async def publishes(order: Order) -> None:
        log.append("publishes")
        bus.publish(Note("from a handler"))

    async def after(order: Order) -> None:
        log.append("after")

    async def on_note(note: Note) -> None:
        log.append(note.text)

    async with tidings.Bus() as bus:
        bus.subscribe(Order, publishes, priority=1)
        bus.subscribe(Order, after)
        bus.subscribe(Note, on_note)
        delivery = await bus.emit(Order(1))
        assert log == ["publishes", "after", "from a handler"]
    assert delivery.ok


class Interrupt(BaseException):
    """Not an Exception: as a KeyboardInterrupt, it ends a dispatch instead of failing it
    (one of its own, so that it cannot stop the test run's event loop)."""


async def test_an_interrupted_emit_drops_what_its_handlers_queued() -> None:
    log: list[str] = []

    async def eager(order: Order) -> None:  # every handler a coroutine: the eager path
        log.append(f"eager {order.n}")
        bus.publish(Note(f"from eager {order.n}"))
        if order.n == 1:
            raise Interrupt

    def general(order: Order) -> None:  # a sync handler: the general path
        log.append(f"general {order.n}")
        bus.publish(Note(f"from general {order.n}"))
        if order.n == 2:
            raise Interrupt

    async with tidings.Bus() as bus:
        notes = bus.subscribe(Note, lambda note: log.append(note.text))
        with bus.subscribe(Order, eager):
            with pytest.raises(Interrupt):
                await bus.emit(Order(1))
            await bus.emit(Note("unrelated"))
            assert log == ["eager 1", "unrelated"]
        log.clear()
        bus.subscribe(Order, general)
        with pytest.raises(Interrupt):
            await bus.emit(Order(2))
        bus.publish(Note("unrelated"))
        assert log == ["general 2", "unrelated"]
        assert (notes.delivered, notes.statistics().dropped) == (2, 2)


async def test_an_emit_cancelled_while_waiting_for_room_drops_what_its_handlers_queued() -> None:
    """Cancelled while it waits for room in a full ``block`` subscription, emit drops what
    its handlers published so far (counted, never dispatched by the thread's next publish)."""
    log: list[str] = []
    gate, taken, waiting = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow(order: Order) -> None:
        taken.set()
        await asyncio.wait_for(gate.wait(), 10)

    def first(order: Order) -> None:
        bus.publish(Note(f"from {order.n}"))
        if order.n == 3:
            waiting.set()  # emit offers to the full buffer next, in this same step

    async with tidings.Bus() as bus:
        notes = bus.subscribe(Note, lambda note: log.append(note.text))
        bus.subscribe(Order, first)
        bus.subscribe(Order, slow, mode="queued", maxsize=1, overflow="block")
        await bus.emit(Order(1))  # taken by the worker, which waits at the gate
        await asyncio.wait_for(taken.wait(), 10)
        await bus.emit(Order(2))  # fills the buffer
        emitting = asyncio.ensure_future(bus.emit(Order(3)))
        await asyncio.wait_for(waiting.wait(), 10)
        assert not emitting.done()
        emitting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(emitting, 10)
        bus.publish(Note("unrelated"))
        assert log == ["from 1", "from 2", "unrelated"]
        assert (notes.delivered, notes.statistics().dropped) == (3, 1)
        gate.set()


async def test_emit_from_inside_a_handler_dispatches_at_once_with_its_own_driver() -> None:
    log: list[str] = []

    async def outer(order: Order) -> int:
        log.append("outer: before")
        inner = await bus.emit(Note("nested"))
        log.append(f"outer: inner gave {inner.results}")
        return order.n

    async def outer_next(order: Order) -> str:
        log.append("outer next")
        return "next"

    async def on_note(note: Note) -> str:
        log.append(note.text)
        return note.text.upper()

    async with tidings.Bus() as bus:
        bus.subscribe(Order, outer, priority=1)
        bus.subscribe(Order, outer_next)
        bus.subscribe(Note, on_note)
        first = await bus.emit(Order(1))
        second = await bus.emit(Order(2))  # the drivers left behind still work
    assert (
        log
        == [
            "outer: before",
            "nested",
            "outer: inner gave ['NESTED']",
            "outer next",
        ]
        * 2
    )
    assert (first.results, second.results) == ([1, "next"], [2, "next"])


async def test_mixed_sync_and_async_handlers_take_the_general_path_exactly() -> None:
    boom = RuntimeError("sync boom")

    def sync_ok(order: Order) -> str:
        return "sync"

    def sync_fails(order: Order) -> None:
        raise boom

    async def async_ok(order: Order) -> str:
        await asyncio.sleep(0)
        return "async"

    async with tidings.Bus() as bus:
        a = bus.subscribe(Order, sync_ok, priority=3)
        b = bus.subscribe(Order, sync_fails, priority=2)
        c = bus.subscribe(Order, async_ok, priority=1)
        delivery = await bus.emit(Order(1))
    assert delivery.outcomes == (
        HandlerOutcome(a.name, "sync"),
        HandlerOutcome(b.name, error=boom),
        HandlerOutcome(c.name, "async"),
    )
    assert [(s.delivered, s.failed) for s in (a, b, c)] == [(1, 0), (0, 1), (1, 0)]


async def test_a_lazy_delivery_equals_an_eager_one_with_the_same_contents() -> None:
    async def handler(order: Order) -> int:
        return order.n

    async with tidings.Bus() as bus:
        sub = bus.subscribe(Order, handler)
        delivery = await bus.emit(Order(3))
    eager = tidings.Delivery(delivery.envelope, (HandlerOutcome(sub.name, 3),))
    assert delivery == eager
    assert eager == delivery
    assert repr(delivery) == repr(eager)


async def test_a_nested_emit_whose_handler_suspends_finishes_in_the_outer_handler() -> None:
    log: list[str] = []

    async def outer(order: Order) -> list[str]:
        inner = await bus.emit(Note("nested"))
        log.append("outer: after inner")
        return inner.results

    async def outer_next(order: Order) -> str:
        log.append("outer next")
        return "next"

    async def on_note(note: Note) -> str:
        log.append("note: start")
        await asyncio.sleep(0)
        log.append("note: end")
        return note.text

    async with tidings.Bus() as bus:
        a = bus.subscribe(Order, outer, priority=1)
        b = bus.subscribe(Order, outer_next)
        c = bus.subscribe(Note, on_note)
        delivery = await bus.emit(Order(1))
        assert (await bus.emit(Order(2))).results == [["nested"], "next"]
    assert log[:4] == ["note: start", "outer next", "note: end", "outer: after inner"]
    assert delivery.outcomes == (HandlerOutcome(a.name, ["nested"]), HandlerOutcome(b.name, "next"))
    assert [(s.delivered, s.failed) for s in (a, b, c)] == [(2, 0), (2, 0), (2, 0)]
