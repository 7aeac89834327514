"""Middleware composition: order, bus-wide middleware, sync/async kinds, refusals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

import tidings
from tidings.middleware import Handler, Middleware


@tidings.event("test.mw.base")
@dataclass(frozen=True)
class Ping:
    n: int


def _tag(log: list[str], name: str) -> Middleware:
    def middleware(handler: Handler) -> Handler:
        def wrapped(env: tidings.Envelope[Any]) -> Any:
            log.append(f"{name}>")
            result = handler(env)
            log.append(f"<{name}")
            return result

        return wrapped

    return middleware


def test_first_listed_is_outermost_and_bus_wide_wraps_outside(bus: tidings.Bus) -> None:
    log: list[str] = []
    bus.use(_tag(log, "bus1"), _tag(log, "bus2"))
    bus.subscribe(
        Ping, lambda p: log.append(f"h{p.n}"), middleware=[_tag(log, "a"), _tag(log, "b")]
    )
    bus.publish(Ping(1))
    assert log == ["bus1>", "bus2>", "a>", "b>", "h1", "<b", "<a", "<bus2", "<bus1"]


def test_use_applies_to_later_subscriptions_only(bus: tidings.Bus) -> None:
    log: list[str] = []
    before = bus.subscribe(Ping, lambda p: log.append("before"))
    bus.use(_tag(log, "x"))
    after = bus.subscribe(Ping, lambda p: log.append("after"))
    bus.publish(Ping(1))
    assert log == ["before", "x>", "after", "<x"]
    assert (before.composed, after.composed) == (False, True)
    assert (before.plain, after.plain) == (True, False)
    assert (before.delivered, after.delivered) == (1, 1)


def test_middleware_sees_the_envelope_and_the_handler_gets_what_it_asked_for(
    bus: tidings.Bus,
) -> None:
    seen: list[object] = []

    def middleware(handler: Handler) -> Handler:
        def wrapped(env: tidings.Envelope[Any]) -> Any:
            seen.append(env)
            return handler(env)

        return wrapped

    got: list[object] = []
    bus.subscribe(Ping, got.append, middleware=[middleware])

    def wants_envelope(env: tidings.Envelope[Ping]) -> None:
        got.append(env)

    bus.subscribe(Ping, wants_envelope, middleware=[middleware])
    env = bus.publish(Ping(7))
    assert seen == [env, env]
    assert got == [Ping(7), env]


async def test_async_handlers_get_async_wrappers_and_results_reach_emit() -> None:
    def doubling(handler: Handler) -> Handler:
        assert tidings.middleware.is_async(handler)

        async def wrapped(env: tidings.Envelope[Any]) -> Any:
            return 2 * await handler(env)

        return wrapped

    async def handler(p: Ping) -> int:
        return p.n

    async with tidings.Bus() as bus:
        bus.subscribe(Ping, handler, middleware=[doubling])
        delivery = await bus.emit(Ping(21))
    assert delivery.results == [42]


def test_a_middleware_changing_the_kind_is_refused(bus: tidings.Bus) -> None:
    def to_sync(handler: Handler) -> Handler:
        return lambda env: None

    async def handler(p: Ping) -> None: ...

    with pytest.raises(tidings.InvalidHandlerError, match="async handler"):
        bus.subscribe(Ping, handler, middleware=[to_sync])


def _print_all(pings: list[Ping]) -> None:  # pragma: no cover - never subscribed
    del pings


def test_bad_middleware_arguments_are_refused(bus: tidings.Bus) -> None:
    with pytest.raises(tidings.InvalidHandlerError, match="list of middleware"):
        bus.subscribe(Ping, print, middleware=_tag([], "x"))  # type: ignore[call-overload]
    with pytest.raises(tidings.InvalidHandlerError, match="callables"):
        bus.subscribe(Ping, print, middleware=[42])  # type: ignore[list-item]
    with pytest.raises(tidings.InvalidHandlerError, match="callables"):
        bus.use(42)  # type: ignore[arg-type]
    with pytest.raises(tidings.InvalidHandlerError, match="batch handler"):
        bus.subscribe(Ping, _print_all, batch=tidings.Batch(), middleware=[_tag([], "x")])


def test_bus_wide_middleware_skips_batch_handlers_and_recordings(bus: tidings.Bus) -> None:
    log: list[str] = []
    bus.use(_tag(log, "x"))
    batches: list[list[Ping]] = []
    sub = bus.subscribe(Ping, batches.append, batch=tidings.Batch(max_size=1, max_wait=0))
    with bus.record() as recorded:
        bus.publish(Ping(1))
    assert not sub.composed
    assert len(recorded) == 1
    assert log == []


def test_a_failure_through_middleware_is_counted_and_dead_lettered_once(bus: tidings.Bus) -> None:
    letters: list[tidings.DeadLetter] = []
    bus.subscribe(tidings.DeadLetter, letters.append)

    def fails(p: Ping) -> None:
        raise ValueError("no")

    sub = bus.subscribe(Ping, fails, middleware=[_tag([], "x")])
    bus.publish(Ping(1))
    assert (sub.delivered, sub.failed) == (0, 1)
    assert [(d.handler, d.attempts, type(d.error)) for d in letters] == [(sub.name, 1, ValueError)]


def test_a_weakly_held_handler_with_middleware_ends_with_its_object(bus: tidings.Bus) -> None:
    import gc

    log: list[str] = []

    class Widget:
        def on_ping(self, p: Ping) -> None:  # pragma: no cover - collected first
            log.append("called")

    widget = Widget()
    sub = bus.subscribe(Ping, widget.on_ping, middleware=[_tag(log, "x")])
    del widget
    gc.collect()
    bus.publish(Ping(1))
    assert log == []
    assert (sub.active, sub.delivered) == (False, 0)


def test_wrap_puts_middleware_around_an_existing_subscription(bus: tidings.Bus) -> None:
    log: list[str] = []
    sub = bus.subscribe(Ping, lambda p: log.append("h"), middleware=[_tag(log, "a")])
    plain = bus.subscribe(Ping, lambda p: log.append("plain"))
    sub.wrap(_tag(log, "outer"))
    plain.wrap(_tag(log, "x"))
    assert (sub.composed, plain.composed, plain.plain) == (True, True, False)
    # the caller (the bus) rebuilds its routes: here, by a new subscription
    bus.subscribe("test.other", lambda e: None).cancel()
    bus.publish(Ping(1))
    assert log == ["outer>", "a>", "h", "<a", "<outer", "x>", "plain", "<x"]
    batches = bus.subscribe(Ping, _print_all, batch=tidings.Batch())
    with pytest.raises(tidings.InvalidHandlerError, match="batch handler"):
        batches.wrap(_tag(log, "y"))


def test_an_observed_bus_still_calls_through_the_middleware(bus: tidings.Bus) -> None:
    from prometheus_client import CollectorRegistry

    from tidings.observability import Metrics

    log: list[str] = []
    before = bus.subscribe(Ping, lambda p: log.append("h1"), middleware=[_tag(log, "a")])
    Metrics(bus, registry=CollectorRegistry())
    after = bus.subscribe(Ping, lambda p: log.append("h2"), middleware=[_tag(log, "b")])
    assert [(s.observed, s.composed) for s in (before, after)] == [(True, True)] * 2
    bus.publish(Ping(1))
    assert log == ["a>", "h1", "<a", "b>", "h2", "<b"]
    assert (before.delivered, after.delivered) == (1, 1)
