"""The in-process bus: routing, order, filters, once, references, re-entrancy, errors."""

from __future__ import annotations

import gc
import logging
import threading
from dataclasses import dataclass
from typing import Any

import pytest

import tidings
from tidings import DeadLetter, Envelope
from tidings.exceptions import (
    BusClosedError,
    InvalidHandlerError,
    InvalidTopicError,
    TopicRequiredError,
)


@tidings.event("test.orders.placed")
@dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    amount: float = 0.0


@tidings.event("test.orders.shipped")
@dataclass(frozen=True)
class OrderShipped:
    order_id: str


@tidings.event("test.nested")
@dataclass(frozen=True)
class Nested:
    depth: int


class BoomError(Exception):
    pass


def test_publish_reaches_class_and_pattern_subscribers(bus: tidings.Bus) -> None:
    seen: list[tuple[str, object]] = []
    bus.subscribe(OrderPlaced, lambda e: seen.append(("class", e)))
    bus.subscribe("test.orders.*", lambda e: seen.append(("star", e)))
    bus.subscribe("test.>", lambda e: seen.append(("tail", e)))
    bus.subscribe("test.orders.shipped", lambda e: seen.append(("other", e)))
    event = OrderPlaced("o1", 5)
    envelope = bus.publish(event)
    assert seen == [("class", event), ("star", event), ("tail", event)]
    assert envelope.topic == "test.orders.placed"
    assert envelope.payload is event


def test_class_subscription_requires_an_instance(bus: tidings.Bus) -> None:
    seen: list[object] = []
    bus.subscribe(OrderPlaced, seen.append)
    bus.publish({"order_id": "x"}, topic="test.orders.placed")
    assert seen == []
    bus.publish(OrderPlaced("y"))
    assert seen == [OrderPlaced("y")]


def test_explicit_topic_routes_builtins(bus: tidings.Bus) -> None:
    seen: list[object] = []
    bus.subscribe("metrics.*", seen.append)
    bus.publish({"cpu": 3}, topic="metrics.host")
    bus.publish(7, topic="metrics.count")
    assert seen == [{"cpu": 3}, 7]


def test_priorities_run_high_first_with_stable_ties(bus: tidings.Bus) -> None:
    order: list[str] = []
    for name, priority in [("a", 0), ("b", 10), ("c", 0), ("d", 10), ("e", -5), ("f", 0)]:
        bus.subscribe(OrderPlaced, lambda e, n=name: order.append(n), priority=priority)
    bus.publish(OrderPlaced("o"))
    assert order == ["b", "d", "a", "c", "f", "e"]


def test_where_filters_on_the_payload(bus: tidings.Bus) -> None:
    big: list[float] = []
    bus.subscribe(OrderPlaced, lambda e: big.append(e.amount), where=lambda e: e.amount > 100)
    for amount in (50, 150, 100, 101):
        bus.publish(OrderPlaced("o", amount))
    assert big == [150, 101]


def test_once_fires_for_the_first_matching_event_only(bus: tidings.Bus) -> None:
    seen: list[float] = []
    sub = bus.subscribe(
        OrderPlaced, lambda e: seen.append(e.amount), once=True, where=lambda e: e.amount > 1
    )
    bus.publish(OrderPlaced("o", 1))
    bus.publish(OrderPlaced("o", 2))
    bus.publish(OrderPlaced("o", 3))
    assert seen == [2]
    assert not sub.active
    assert sub not in bus.subscriptions()


def test_once_is_once_across_threads(bus: tidings.Bus) -> None:
    calls: list[int] = []
    bus.subscribe(OrderPlaced, lambda e: calls.append(1), once=True)
    barrier = threading.Barrier(4)

    def work() -> None:
        barrier.wait(timeout=10)
        for _ in range(200):
            bus.publish(OrderPlaced("o"))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert calls == [1]


def test_cancel_is_idempotent_and_a_context_manager(bus: tidings.Bus) -> None:
    seen: list[object] = []
    sub = bus.subscribe(OrderPlaced, seen.append)
    sub.cancel()
    sub.cancel()
    bus.publish(OrderPlaced("a"))
    with bus.subscribe(OrderPlaced, seen.append) as scoped:
        assert scoped.active
        bus.publish(OrderPlaced("b"))
    bus.publish(OrderPlaced("c"))
    assert seen == [OrderPlaced("b")]
    assert "cancelled" in repr(scoped)


def test_envelope_handlers_by_annotation_or_flag(bus: tidings.Bus) -> None:
    got: list[object] = []

    def wants(envelope: Envelope[OrderPlaced]) -> None:
        got.append(envelope)

    def forced(x: Any) -> None:
        got.append(x)

    bus.subscribe(OrderPlaced, wants)
    bus.subscribe(OrderPlaced, forced, envelope=True)
    envelope = bus.publish(OrderPlaced("o"), key="k", headers={"h": "v"})
    assert got == [envelope, envelope]
    assert envelope.key == "k"
    assert envelope.headers["h"] == "v"


class Widget:
    def __init__(self) -> None:
        self.seen: list[object] = []

    def handle(self, event: OrderPlaced) -> None:
        self.seen.append(event)


def test_bound_methods_are_held_weakly(bus: tidings.Bus) -> None:
    widget = Widget()
    sub = bus.subscribe(OrderPlaced, widget.handle)
    bus.publish(OrderPlaced("a"))
    assert widget.seen == [OrderPlaced("a")]
    del widget
    gc.collect()
    assert not sub.active
    assert bus.subscriptions() == ()
    bus.publish(OrderPlaced("b"))  # raises nothing


def test_bound_method_object_deleted_mid_run(bus: tidings.Bus) -> None:
    """An object that dies inside a dispatch leaves no subscription and raises nothing."""
    widgets = [Widget() for _ in range(3)]
    subs = [bus.subscribe(OrderPlaced, w.handle) for w in widgets]
    failures: list[BaseException] = []
    bus.subscribe(DeadLetter, lambda d: failures.append(d.error))

    def killer(event: OrderPlaced) -> None:
        widgets.clear()
        gc.collect()

    bus.subscribe(OrderPlaced, killer, priority=1)
    bus.publish(OrderPlaced("a"))
    assert failures == []
    assert not any(s.active for s in subs)
    assert [s.name.rsplit(".", 1)[-1] for s in bus.subscriptions()] == ["killer", "<lambda>"]
    bus.publish(OrderPlaced("b"))
    assert failures == []


def test_strong_references_for_functions_and_lambdas(bus: tidings.Bus) -> None:
    seen: list[object] = []
    bus.subscribe(OrderPlaced, lambda e: seen.append(e))
    gc.collect()
    bus.publish(OrderPlaced("a"))
    assert seen == [OrderPlaced("a")]


def test_weak_false_holds_a_bound_method_strongly(bus: tidings.Bus) -> None:
    widget = Widget()
    seen = widget.seen
    bus.subscribe(OrderPlaced, widget.handle, weak=False)
    del widget
    gc.collect()
    bus.publish(OrderPlaced("a"))
    assert seen == [OrderPlaced("a")]


def test_owner_ties_the_subscription_to_its_lifetime(bus: tidings.Bus) -> None:
    class Screen:
        pass

    screen = Screen()
    seen: list[object] = []
    sub = bus.subscribe(OrderPlaced, seen.append, owner=screen)
    bus.publish(OrderPlaced("a"))
    del screen
    gc.collect()
    bus.publish(OrderPlaced("b"))
    assert seen == [OrderPlaced("a")]
    assert not sub.active


@pytest.mark.parametrize("held_by", ["owner", "weak bound method", "queued owner"])
def test_an_owner_collected_while_the_bus_lock_is_held_ends_its_subscription(
    bus: tidings.Bus, held_by: str
) -> None:
    """The cyclic GC can free an owner inside any code, even the bus's own locked blocks:
    the weakref callback must take no lock (else the thread deadlocks on itself)."""
    seen: list[object] = []
    owned: list[object] = []
    other = bus.subscribe(OrderPlaced, seen.append)
    widget = Widget()
    if held_by == "weak bound method":
        sub = bus.subscribe(OrderPlaced, widget.handle)
        owned = widget.seen
    else:
        mode: Any = "queued" if held_by == "queued owner" else None
        sub = bus.subscribe(OrderPlaced, owned.append, owner=widget, mode=mode)
    bus.publish(OrderPlaced("a"))  # builds and caches the route holding both
    owners = [widget]
    del widget

    def collect_under_the_lock() -> None:
        with bus._lock:  # where the cyclic GC may run the callback
            owners.clear()  # the last reference: the weakref callback runs right here

    thread = threading.Thread(target=collect_under_the_lock, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the weakref callback deadlocked on the bus's lock"
    assert not sub.active
    bus.publish(OrderPlaced("b"))
    assert bus.subscriptions() == (other,)
    if sub.queued is not None:
        assert sub.queued.closed
        assert sub.queued.wait_handled(10)
    assert seen == [OrderPlaced("a"), OrderPlaced("b")]
    assert owned == [OrderPlaced("a")]  # nothing after its owner was collected


def test_unreferenceable_objects_get_clear_errors(bus: tidings.Bus) -> None:
    class Slotted:
        __slots__ = ()

        def handle(self, event: object) -> None:
            pass

    with pytest.raises(InvalidHandlerError, match="pass weak=False"):
        bus.subscribe(OrderPlaced, Slotted().handle)
    with pytest.raises(InvalidHandlerError, match="owner= must support weak references"):
        bus.subscribe(OrderPlaced, print, owner=Slotted())
    with pytest.raises(InvalidHandlerError, match="is not a bound method"):
        bus.subscribe(OrderPlaced, print, weak=True)


@pytest.mark.parametrize("handler", [None, 42, "print"])
def test_handler_must_be_callable(bus: tidings.Bus, handler: object) -> None:
    with pytest.raises(InvalidHandlerError, match="handler must be callable"):
        bus.subscribe(OrderPlaced, handler)  # type: ignore[call-overload]


def test_bad_targets_and_filters(bus: tidings.Bus) -> None:
    with pytest.raises(InvalidTopicError, match="may only be the last token"):
        bus.subscribe("a.>.b", print)
    with pytest.raises(InvalidHandlerError, match="event class or a topic pattern"):
        bus.subscribe(42, print)  # type: ignore[call-overload]
    with pytest.raises(InvalidHandlerError, match="where= must be a callable"):
        bus.subscribe(OrderPlaced, print, where=True)  # type: ignore[call-overload]
    with pytest.raises(TopicRequiredError):
        bus.subscribe(int, print)


@pytest.mark.parametrize("value", [1, "text", {"a": 1}])
def test_publishing_a_builtin_without_topic_is_explained(bus: tidings.Bus, value: object) -> None:
    with pytest.raises(TopicRequiredError, match=r"topic='some.topic'"):
        bus.publish(value)


def test_publishing_on_a_bad_topic_names_the_token(bus: tidings.Bus) -> None:
    with pytest.raises(InvalidTopicError, match="token 3 is empty"):
        bus.publish(OrderPlaced("x"), topic="a.b.")
    with pytest.raises(InvalidTopicError, match="wildcard"):
        bus.publish(OrderPlaced("x"), topic="a.*")


def test_keys_and_headers_must_be_text(bus: tidings.Bus) -> None:
    seen: list[Envelope[OrderPlaced]] = []

    def handler(envelope: Envelope[OrderPlaced]) -> None:
        seen.append(envelope)

    bus.subscribe(OrderPlaced, handler)
    with pytest.raises(TypeError, match=r"key= is a str .* not int 1"):
        bus.publish(OrderPlaced("a"), key=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"headers= maps str to str.*'n': 1 is str to int"):
        bus.publish(OrderPlaced("a"), headers={"n": 1})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"headers= takes a mapping of str to str, not list"):
        bus.publish(OrderPlaced("a"), headers=[1])  # type: ignore[arg-type]
    assert seen == []  # nothing was published
    envelope = bus.publish(OrderPlaced("a"), key="k", headers={"n": "1"})
    assert (envelope.key, dict(envelope.headers)) == ("k", {"n": "1"})
    assert seen == [envelope]


def test_subscribing_and_cancelling_during_dispatch(bus: tidings.Bus) -> None:
    order: list[str] = []
    late: list[tidings.Subscription[Any]] = []

    def second(event: OrderPlaced) -> None:
        order.append("second")

    second_sub = bus.subscribe(OrderPlaced, second, priority=5)

    def first(event: OrderPlaced) -> None:
        order.append("first")
        if not late:
            second_sub.cancel()  # takes effect for the next event
            late.append(bus.subscribe(OrderPlaced, lambda e: order.append("late")))

    bus.subscribe(OrderPlaced, first, priority=10)
    bus.publish(OrderPlaced("1"))
    bus.publish(OrderPlaced("2"))
    assert order == ["first", "second", "first", "late"]


def test_reentrant_publish_is_queued_after_the_current_dispatch(bus: tidings.Bus) -> None:
    log: list[str] = []

    def on_placed(event: OrderPlaced) -> None:
        log.append(f"placed-a {event.order_id}")
        bus.publish(OrderShipped(event.order_id))
        log.append("placed-a returns")

    bus.subscribe(OrderPlaced, on_placed)
    bus.subscribe(OrderPlaced, lambda e: log.append("placed-b"))
    bus.subscribe(OrderShipped, lambda e: log.append(f"shipped {e.order_id}"))
    bus.publish(OrderPlaced("o1"))
    assert log == ["placed-a o1", "placed-a returns", "placed-b", "shipped o1"]


def test_deeply_nested_publishing_has_no_recursion(bus: tidings.Bus) -> None:
    depths: list[int] = []

    def chain(event: Nested) -> None:
        depths.append(event.depth)
        if event.depth < 10_000:
            bus.publish(Nested(event.depth + 1))

    bus.subscribe(Nested, chain)
    bus.publish(Nested(1))
    assert depths == list(range(1, 10_001))


def test_an_interrupted_dispatch_drops_what_its_handlers_queued(
    bus: tidings.Bus, caplog: pytest.LogCaptureFixture
) -> None:
    """A ``KeyboardInterrupt`` goes on at once; the events the interrupted dispatch's
    handlers published are counted as dropped and logged, never dispatched by the thread's
    next publish. Through the general path (a filtered subscription)."""
    log: list[str] = []

    def on_placed(event: OrderPlaced) -> None:
        log.append(f"placed {event.order_id}")
        if event.order_id == "stop":
            bus.publish(OrderShipped("s1"))
            bus.publish(OrderShipped("s2"))
            raise KeyboardInterrupt

    bus.subscribe(OrderPlaced, on_placed, where=lambda e: True)
    shipped = bus.subscribe(OrderShipped, lambda e: log.append(f"shipped {e.order_id}"))
    with caplog.at_level(logging.ERROR, logger="tidings"), pytest.raises(KeyboardInterrupt):
        bus.publish(OrderPlaced("stop"))
    assert log == ["placed stop"]
    bus.publish(OrderPlaced("next"))
    assert log == ["placed stop", "placed next"]
    assert (shipped.delivered, shipped.statistics().dropped) == (0, 2)
    (record,) = caplog.records
    assert record.getMessage().startswith(
        "a dispatch was interrupted by KeyboardInterrupt: 2 event(s)"
    )


def test_an_interrupted_dispatch_counts_a_drop_only_on_subscriptions_still_active(
    bus: tidings.Bus,
) -> None:
    """A ``once`` subscription that already took its event would never get the dropped one:
    it does not count it as dropped."""

    def on_placed(event: OrderPlaced) -> None:
        bus.publish(OrderShipped("s1"))
        bus.publish(OrderShipped("s2"))

    def on_shipped(event: OrderShipped) -> None:
        if event.order_id == "s1":
            raise KeyboardInterrupt  # s2 is still queued

    once = bus.subscribe(OrderShipped, lambda e: None, once=True)
    every = bus.subscribe(OrderShipped, on_shipped)
    bus.subscribe(OrderPlaced, on_placed)
    with pytest.raises(KeyboardInterrupt):
        bus.publish(OrderPlaced("o1"))
    assert (once.delivered, once.statistics().dropped) == (1, 0)
    assert every.statistics().dropped == 1


def test_an_interrupt_while_draining_names_the_event_it_was_dispatching(
    bus: tidings.Bus, caplog: pytest.LogCaptureFixture
) -> None:
    """Interrupted in the first handler of an event a handler published, the dispatch logs
    that event: its other handler never had it, and its publisher has returned."""
    published: list[tidings.Envelope[OrderShipped]] = []
    later: list[str] = []

    def on_shipped(event: OrderShipped) -> None:
        raise KeyboardInterrupt

    bus.subscribe(OrderPlaced, lambda e: published.append(bus.publish(OrderShipped("s1"))))
    bus.subscribe(OrderShipped, on_shipped)
    bus.subscribe(OrderShipped, lambda e: later.append(e.order_id))
    with caplog.at_level(logging.ERROR, logger="tidings"), pytest.raises(KeyboardInterrupt):
        bus.publish(OrderPlaced("o1"))
    assert later == []
    (record,) = caplog.records
    assert record.getMessage() == (
        "a dispatch was interrupted by KeyboardInterrupt: 0 event(s) its handlers published "
        f"were dropped, not dispatched; {published[0].id} (test.orders.shipped), which its "
        "handlers published, was being dispatched: not every handler of it may have had it"
    )


def test_a_dispatch_defers_only_its_own_threads_publishes(bus: tidings.Bus) -> None:
    """While one thread dispatches (its handler waits), what another thread publishes is
    dispatched at once on that thread; the waiting handler's own publish waits for it."""
    log: list[str] = []
    entered, release = threading.Event(), threading.Event()

    def on_placed(event: OrderPlaced) -> None:
        if event.order_id == "a":
            log.append("a in")
            bus.publish(OrderShipped("from a"))
            entered.set()
            assert release.wait(10)
            log.append("a out")
        else:
            log.append(event.order_id)
            bus.publish(OrderShipped(f"from {event.order_id}"))

    bus.subscribe(OrderPlaced, on_placed)
    bus.subscribe(OrderShipped, lambda e: log.append(f"shipped {e.order_id}"))
    worker = threading.Thread(target=bus.publish, args=(OrderPlaced("a"),))
    worker.start()
    try:
        assert entered.wait(10)
        bus.publish(OrderPlaced("b"))
        assert log == ["a in", "b", "shipped from b"]
    finally:
        release.set()
        worker.join(10)
    assert not worker.is_alive()
    assert log == ["a in", "b", "shipped from b", "a out", "shipped from a"]


def test_a_handler_publishing_on_another_bus_dispatches_there_at_once(bus: tidings.Bus) -> None:
    """Re-entrancy is per bus: only a publish on the bus that is dispatching waits."""
    other = tidings.Bus()
    log: list[str] = []

    def on_placed(event: OrderPlaced) -> None:
        other.publish(OrderShipped(event.order_id))
        bus.publish(OrderShipped(event.order_id))
        log.append("placed")

    bus.subscribe(OrderPlaced, on_placed)
    bus.subscribe(OrderShipped, lambda e: log.append("shipped here"))
    other.subscribe(OrderShipped, lambda e: log.append("shipped on the other bus"))
    bus.publish(OrderPlaced("o"))
    assert log == ["shipped on the other bus", "placed", "shipped here"]
    other.close()


@pytest.mark.parametrize("failing", [[0], [2], [4], [0, 2, 4]])
def test_error_isolation(bus: tidings.Bus, failing: list[int]) -> None:
    """The first, middle and last handler failing stops neither others nor the publisher."""
    ran: list[int] = []
    dead: list[DeadLetter] = []

    def make(i: int) -> Any:
        def handler(event: OrderPlaced) -> None:
            ran.append(i)
            if i in failing:
                raise BoomError(f"handler {i}")

        handler.__qualname__ = f"handler{i}"
        return handler

    subs = [bus.subscribe(OrderPlaced, make(i), priority=-i) for i in range(5)]
    bus.subscribe(DeadLetter, dead.append)
    envelope = bus.publish(OrderPlaced("o"))
    assert ran == [0, 1, 2, 3, 4]
    assert [d.handler.rsplit(".", 1)[-1] for d in dead] == [f"handler{i}" for i in failing]
    assert all(d.envelope is envelope for d in dead)
    assert all(isinstance(d.error, BoomError) for d in dead)
    assert [s.failed for s in subs] == [1 if i in failing else 0 for i in range(5)]
    assert dead[0].reason.startswith("BoomError: handler")


def test_on_error_hook_sees_every_failure_and_its_own_errors_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hooked: list[tuple[str, str]] = []

    def hook(envelope: Envelope[Any], sub: tidings.Subscription[Any], exc: BaseException) -> None:
        hooked.append((envelope.topic, str(exc)))
        raise RuntimeError("hook broke")

    bus = tidings.Bus(on_error=hook)

    def fails(event: OrderPlaced) -> None:
        raise BoomError("bad")

    bus.subscribe(OrderPlaced, fails)
    with caplog.at_level(logging.ERROR, logger="tidings"):
        bus.publish(OrderPlaced("o"))
    assert hooked == [("test.orders.placed", "bad")]
    assert "on_error hook failed" in caplog.text


def test_failing_dead_letter_handler_is_logged_not_dead_lettered(
    bus: tidings.Bus, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[DeadLetter] = []

    def broken_dead_letters(letter: DeadLetter) -> None:
        calls.append(letter)
        raise BoomError("dead-letter handler broke")

    def fails(event: OrderPlaced) -> None:
        raise BoomError("original")

    bus.subscribe(DeadLetter, broken_dead_letters)
    bus.subscribe(OrderPlaced, fails)
    with caplog.at_level(logging.ERROR, logger="tidings"):
        bus.publish(OrderPlaced("o"))
    assert len(calls) == 1
    assert "not dead-lettered again" in caplog.text


def test_a_failure_nobody_handles_is_logged_as_an_error(
    bus: tidings.Bus, caplog: pytest.LogCaptureFixture
) -> None:
    def fails(event: OrderPlaced) -> None:
        raise BoomError("unheard")

    bus.subscribe(OrderPlaced, fails)
    with caplog.at_level(logging.ERROR, logger="tidings"):
        envelope = bus.publish(OrderPlaced("o"))
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "subscribe to tidings.DeadLetter or pass on_error=" in record.getMessage()
    assert envelope.id in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], BoomError)
    caplog.clear()
    heard: list[DeadLetter] = []
    bus.subscribe(DeadLetter, heard.append)
    with caplog.at_level(logging.ERROR, logger="tidings"):
        bus.publish(OrderPlaced("o"))
    assert len(heard) == 1
    assert not [r for r in caplog.records if r.levelno == logging.ERROR]


def test_a_catch_all_subscriber_does_not_swallow_dead_letters(
    bus: tidings.Bus, caplog: pytest.LogCaptureFixture
) -> None:
    def fails(event: OrderPlaced) -> None:
        raise BoomError("heard by nobody but the log")

    everything: list[str] = []
    first_wildcard: list[str] = []
    bus.subscribe(">", lambda env: everything.append(env.topic), envelope=True)
    bus.subscribe("*.dead_letter", lambda env: first_wildcard.append(env.topic), envelope=True)
    bus.subscribe(OrderPlaced, fails)
    with caplog.at_level(logging.ERROR, logger="tidings"):
        envelope = bus.publish(OrderPlaced("o"))
    assert everything == ["test.orders.placed"]
    assert first_wildcard == []
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert envelope.id in record.getMessage()
    # By name (the class, the topic, a pattern naming the first token) they are delivered.
    by_name: list[str] = []
    for target in (DeadLetter, "tidings.dead_letter", "tidings.>", "tidings.*"):
        bus.subscribe(target, lambda env, t=target: by_name.append(str(t)), envelope=True)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="tidings"):
        bus.publish(OrderPlaced("o"))
    assert len(by_name) == 4
    assert everything == ["test.orders.placed"] * 2
    assert first_wildcard == []
    assert not [r for r in caplog.records if r.levelno == logging.ERROR]


def test_closed_bus_refuses_events_and_subscriptions() -> None:
    bus = tidings.Bus()
    bus.close()
    assert bus.closed
    with pytest.raises(BusClosedError):
        bus.publish(OrderPlaced("o"))
    with pytest.raises(BusClosedError):
        bus.subscribe(OrderPlaced, print)


def test_sync_program_needs_no_event_loop() -> None:
    seen: list[object] = []
    with tidings.Bus() as bus:
        bus.subscribe(OrderPlaced, seen.append)
        bus.publish(OrderPlaced("o"))
    assert seen == [OrderPlaced("o")]


def test_async_handler_without_loop_is_dead_lettered_not_raised(bus: tidings.Bus) -> None:
    dead: list[DeadLetter] = []
    started: list[int] = []

    async def needs_loop(event: OrderPlaced) -> None:
        started.append(1)

    bus.subscribe(OrderPlaced, needs_loop)
    bus.subscribe(DeadLetter, dead.append)
    bus.publish(OrderPlaced("o"))
    assert started == []
    assert len(dead) == 1
    assert isinstance(dead[0].error, tidings.LoopNotRunningError)
    assert "async with Bus()" in str(dead[0].error)


def test_publish_from_threads_counts_every_delivery_once(bus: tidings.Bus) -> None:
    counts = [0, 0, 0]
    lock = threading.Lock()

    def make(i: int) -> Any:
        def handler(event: OrderPlaced) -> None:
            with lock:
                counts[i] += 1

        return handler

    for i in range(3):
        bus.subscribe(OrderPlaced, make(i))
    threads = [
        threading.Thread(target=lambda: [bus.publish(OrderPlaced("o")) for _ in range(10_000)])
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert counts == [40_000, 40_000, 40_000]


def test_statistics_of_a_subscription(bus: tidings.Bus) -> None:
    sub = bus.subscribe(OrderPlaced, print)
    assert sub.failed == 0
    assert sub.pattern == "test.orders.placed"
    assert sub.event_type is OrderPlaced
    assert repr(bus).startswith("<Bus open subscriptions=1")


def test_envelope_times_are_unique_and_ordered_across_threads() -> None:
    bus = tidings.Bus()
    bus.subscribe(OrderPlaced, lambda e: None)
    times: list[list[int]] = [[] for _ in range(4)]

    def work(out: list[int]) -> None:
        for _ in range(5_000):
            out.append(bus.publish(OrderPlaced("o")).time)

    threads = [threading.Thread(target=work, args=(out,)) for out in times]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    every = [t for out in times for t in out]
    assert len(set(every)) == len(every) == 20_000
    assert all(out == sorted(out) for out in times)


@pytest.mark.parametrize("physical", [0, 7 << 16], ids=["small ints", "packed times"])
def test_publish_that_loses_the_clock_race_asks_the_clock(physical: int) -> None:
    """Publish claims its time with one atomic step; when another caller advances the clock
    between publish's read of it and that claim (here: the wall clock itself, read in
    between, advances it three times), publish loses and takes the clock's next time."""
    interfere = [False]

    def wall() -> int:
        if interfere[0]:
            interfere[0] = False
            for _ in range(3):
                clock.now()
        return physical

    clock = tidings.HybridClock(wall=wall, node="00000000000000aa")
    bus = tidings.Bus(clock=clock)
    bus.subscribe(OrderPlaced, lambda e: None)
    first = bus.publish(OrderPlaced("o")).time
    interfere[0] = True
    second = bus.publish(OrderPlaced("o")).time
    assert not interfere[0]  # the wall clock was read inside the publish
    assert second == first + 4  # three taken meanwhile, then the clock's next
    assert clock.now() == first + 5


def test_publish_follows_the_send_rule_inside_and_across_granules() -> None:
    """Publish skips masking the physical time while it is inside the granule of a time the
    bus issued; the times are still exactly the send rule's: the counter in the low bits
    (never the sub-granule nanoseconds), the next granule's start once the physical clock
    gets there, and last + 1 after another caller moved the clock ahead."""
    granule = 1 << 16
    wall = [7 * granule + 100]
    clock = tidings.HybridClock(wall=lambda: wall[0], node="00000000000000aa")
    bus = tidings.Bus(clock=clock)

    def stamp(physical: int) -> int:
        wall[0] = physical
        return bus.publish(OrderPlaced("o")).time

    assert stamp(7 * granule + 100) == 7 * granule  # first: the granule's start
    assert stamp(7 * granule + 5_000) == 7 * granule + 1  # same granule: the counter
    assert stamp(7 * granule + 10) == 7 * granule + 2  # the wall went back a little
    assert stamp(8 * granule + 3) == 8 * granule  # the next granule
    assert clock.update(12 * granule + 9) == 12 * granule + 10  # a remote time ahead
    assert stamp(8 * granule + 4) == 12 * granule + 11  # behind the clock: last + 1
    assert stamp(12 * granule + 20) == 12 * granule + 12  # inside the clock's granule
    assert stamp(13 * granule) == 13 * granule
    assert clock.now() == 13 * granule + 1


def test_the_bus_stamps_with_its_clock() -> None:
    wall = [7 << 16]
    clock = tidings.HybridClock(wall=lambda: wall[0], node="00000000000000aa")
    bus = tidings.Bus(clock=clock, source="urn:test")
    first = bus.publish(OrderPlaced("o"))
    second = bus.publish(OrderPlaced("o"))
    assert (first.time, second.time) == (7 << 16, (7 << 16) + 1)
    assert first.id == f"{7 << 16:016x}00000000000000aa"
    assert first.source == "urn:test"
    assert clock.now() == (7 << 16) + 2  # the bus advanced the same clock
