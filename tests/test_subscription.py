"""Subscriptions: handlers checked at subscribe time (issue 12, "no silent failure"),
introspection cached per code object, exact statistics through shared route counters."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import tidings
from tidings import Envelope, InvalidHandlerError, SQLiteStore


@tidings.event("test.subscription.ping")
@dataclass(frozen=True)
class Ping:
    n: int


def _no_arguments() -> None: ...


def _two_arguments(event: Ping, extra: int) -> None: ...


def _keyword_only(event: Ping, *, extra: int) -> None: ...


@pytest.mark.parametrize(
    ("handler", "problem"),
    [
        (lambda: None, "takes no arguments"),
        (_no_arguments, "takes no arguments"),
        (_two_arguments, "requires 2 positional arguments"),
        (_keyword_only, "requires 1 keyword-only argument"),
        (functools.partial(_two_arguments, Ping(0), 1), "cannot be called so"),
    ],
)
def test_a_handler_that_cannot_take_the_event_is_refused_at_subscribe(
    handler: Callable[..., Any], problem: str
) -> None:
    bus = tidings.Bus()
    with pytest.raises(InvalidHandlerError, match=problem) as raised:
        bus.subscribe(Ping, handler)
    message = str(raised.value)
    assert tidings.subscription.handler_name(handler) in message
    assert "called with one argument" in message
    assert bus.subscriptions() == ()


class _Callable:
    def __init__(self, seen: list[Any]) -> None:
        self.seen = seen

    def __call__(self, event: Ping) -> None:
        self.seen.append(event.n)


class _Holder:
    def __init__(self, seen: list[Any]) -> None:
        self.seen = seen

    def method(self, event: Ping) -> None:
        self.seen.append(event.n)

    @classmethod
    def klass(cls, event: Ping, *rest: object) -> None:
        _CLASS_SEEN.append(event.n)


_CLASS_SEEN: list[int] = []


def test_every_kind_of_handler_that_takes_one_argument_is_accepted_and_called() -> None:
    bus = tidings.Bus()
    seen: list[Any] = []
    holder = _Holder(seen)

    def with_default(event: Ping, scale: int = 10) -> None:
        seen.append(event.n * scale)

    def variadic(*args: Any) -> None:
        seen.append(("args", args[0].n))

    def wrapped(func: Callable[[Ping], None]) -> Callable[..., None]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> None:
            func(*args, **kwargs)

        return wrapper

    def two(prefix: str, event: Ping) -> None:
        seen.append(f"{prefix}{event.n}")

    handlers: list[Callable[..., Any]] = [
        with_default,
        variadic,
        _Callable(seen),
        holder.method,
        _Holder.klass,
        functools.partial(two, "p"),
        wrapped(lambda event: seen.append(("wrapped", event.n))),
        seen.append,  # a builtin method: its signature is read, one argument
    ]
    for handler in handlers:
        bus.subscribe(Ping, handler)
    bus.publish(Ping(1))
    assert len(bus.subscriptions()) == len(handlers)
    assert seen == [10, ("args", 1), 1, 1, "p1", ("wrapped", 1), Ping(1)]
    assert _CLASS_SEEN == [1]


def test_a_builtin_whose_signature_cannot_be_read_is_accepted() -> None:
    bus = tidings.Bus()
    with pytest.raises(ValueError, match="no signature found"):
        inspect.signature(vars)
    sub = bus.subscribe("test.subscription.any", vars)  # vars(obj) takes one argument
    assert sub.active


async def test_async_and_batch_handlers_are_checked_too() -> None:
    async with tidings.Bus() as bus:

        async def no_event() -> None: ...

        with pytest.raises(InvalidHandlerError, match="takes no arguments"):
            bus.subscribe(Ping, no_event)  # type: ignore[arg-type]  # mypy catches it too
        with pytest.raises(InvalidHandlerError, match="requires 2 positional"):
            bus.subscribe(
                Ping,
                lambda a, b: None,  # type: ignore[arg-type]
                batch=tidings.Batch(max_size=2, max_wait=5),
            )
        batches: list[list[int]] = []
        sub = bus.subscribe(
            Ping,
            lambda events: batches.append([e.n for e in events]),
            batch=tidings.Batch(max_size=2, max_wait=5),
        )
        bus.publish(Ping(1))
        bus.publish(Ping(2))
        assert await sub.drained(timeout=5)
        assert batches == [[1, 2]]


async def test_a_transactional_handler_takes_the_event_and_the_transaction(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    async with tidings.Bus(store=SQLiteStore(path)) as bus:
        with pytest.raises(InvalidHandlerError, match="two arguments: the event and the Tr"):
            bus.subscribe(  # type: ignore[call-overload]
                Ping, lambda event: None, durable="one-arg", transactional=True
            )
        handled: list[int] = []

        def charge(event: Ping, tx: tidings.Transaction) -> None:
            handled.append(event.n)

        bus.subscribe(Ping, charge, durable="billing", transactional=True)
        bus.publish(Ping(7))
        store = bus.store
        assert store is not None
        for _ in range(500):
            if await store.load_checkpoint("billing") >= 1:
                break
            await asyncio.sleep(0.01)
    assert handled == [7]


def test_closures_of_one_function_are_introspected_each_with_its_own_annotation() -> None:
    def make(annotation: Any) -> Callable[[Any], None]:
        def handler(event: Any) -> None:
            seen.append(type(event).__name__)

        # As a def evaluates its annotations without the __future__ import: per closure.
        handler.__annotations__ = {"event": annotation, "return": None}
        return handler

    seen: list[str] = []
    bus = tidings.Bus()
    bus.subscribe(Ping, make(Ping))
    bus.subscribe(Ping, make(Envelope))
    bus.subscribe(Ping, make(Ping))
    bus.publish(Ping(3))
    assert seen == ["Ping", "Envelope", "Ping"]


def test_delivered_stays_exact_while_routes_are_built_evicted_and_read_between() -> None:
    bus = tidings.Bus(route_cache_size=2)
    seen: list[int] = []
    wide = bus.subscribe("st.>", lambda event: seen.append(event.n))
    narrow = bus.subscribe("st.*", lambda event: seen.append(-event.n))
    other = bus.subscribe("st.t0", lambda event: None)
    for n in range(60):
        bus.publish(Ping(n), topic=f"st.t{n % 5}")  # 5 topics through a 2-route cache
        assert (wide.delivered, narrow.delivered) == (n + 1, n + 1)
        assert other.delivered == n // 5 + 1
    assert len(seen) == 120
    assert [s.delivered for s in bus.statistics().subscriptions] == [60, 60, 12]


def test_a_function_subscribed_again_is_read_again_after_its_annotation_or_code_changed() -> None:
    """The shape of the last function subscribed is remembered; a change to its first
    parameter's annotation (in place or by a new dict) or to its code is seen."""
    bus = tidings.Bus()

    def handler(event):  # type: ignore[no-untyped-def]
        return None

    assert not bus.subscribe("a.b", handler).wants_envelope
    handler.__annotations__["event"] = tidings.Envelope[Any]
    assert bus.subscribe("a.b", handler).wants_envelope
    handler.__annotations__ = {}
    assert not bus.subscribe("a.b", handler).wants_envelope

    async def coroutine(event):  # type: ignore[no-untyped-def]
        return None

    handler.__code__ = coroutine.__code__
    sub = bus.subscribe("a.b", handler)
    assert (sub.is_async, sub.mode) == (True, "task")
