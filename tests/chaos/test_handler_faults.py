"""Handler faults as middleware on a real bus: exact counts of what each injected."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

import tidings
from tidings import Bus, InvalidHandlerError
from tidings.chaos import Drop, Duplicate, ErrorRate, Hang, InjectedFaultError, Latency, Reorder
from tidings.middleware import Timeout


@tidings.event("chaos.test.tick")
@dataclass(frozen=True)
class Tick:
    n: int


def test_error_rate_fails_exactly_the_injected_calls() -> None:
    seen: list[int] = []
    errors: list[BaseException] = []
    bus = Bus(on_error=lambda env, sub, exc: errors.append(exc))
    fault = ErrorRate(0.3, seed=7)
    sub = bus.subscribe(Tick, lambda t: seen.append(t.n), middleware=[fault])
    for n in range(200):
        bus.publish(Tick(n))
    assert 0 < fault.injected < 200
    assert len(errors) == fault.injected == sub.statistics().failed
    assert len(seen) == 200 - fault.injected
    assert all(isinstance(e, InjectedFaultError) for e in errors)


def test_drop_and_duplicate_change_the_number_of_calls_by_what_they_injected() -> None:
    bus = Bus()
    dropped: list[int] = []
    doubled: list[int] = []
    drop, dup = Drop(0.25, seed=1), Duplicate(0.25, seed=2)
    bus.subscribe(Tick, lambda t: dropped.append(t.n), middleware=[drop])
    bus.subscribe(Tick, lambda t: doubled.append(t.n), middleware=[dup])
    for n in range(100):
        bus.publish(Tick(n))
    assert len(dropped) == 100 - drop.injected
    assert len(doubled) == 100 + dup.injected
    assert 0 < drop.injected < 100
    assert 0 < dup.injected < 100


def test_latency_delays_a_sync_handler() -> None:
    bus = Bus()
    bus.subscribe(Tick, lambda t: None, middleware=[Latency(0.05)])
    started = time.monotonic()
    bus.publish(Tick(1))
    assert time.monotonic() - started >= 0.05


async def test_hang_is_cut_by_a_timeout_and_counted_as_failure() -> None:
    errors: list[BaseException] = []
    async with Bus(on_error=lambda env, sub, exc: errors.append(exc)) as bus:

        async def handler(t: Tick) -> None:
            pass

        bus.subscribe(Tick, handler, middleware=[Timeout(0.1), Hang(1.0)])
        delivery = await bus.emit(Tick(1))
    assert [type(e) for e in errors] == [TimeoutError]
    assert delivery.errors


def test_hang_on_a_sync_handler_needs_a_bound() -> None:
    with pytest.raises(InvalidHandlerError, match="seconds="):
        Bus().subscribe(Tick, lambda t: None, middleware=[Hang()])


async def test_reorder_runs_every_event_once_in_a_shuffled_order() -> None:
    seen: list[int] = []
    fault = Reorder(8, hold=0.05, seed=3)

    async def handler(t: Tick) -> None:
        seen.append(t.n)

    async with Bus() as bus:
        bus.subscribe(Tick, handler, middleware=[fault])
        await asyncio.gather(*(bus.emit(Tick(n)) for n in range(32)))
    assert sorted(seen) == list(range(32))
    assert seen != list(range(32))
    assert fault.injected == 4


def test_bad_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="fraction"):
        ErrorRate(1.5)
    with pytest.raises(ValueError, match="window"):
        Reorder(1)
