"""Circuit breaker: opens after N failures in a row, fails fast, half-open trial, closes."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import tidings
from tidings.middleware import CircuitBreaker


@tidings.event("test.mw.breaker")
@dataclass(frozen=True)
class Call:
    ok: bool


class DownError(Exception):
    pass


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_fails_fast_half_opens_and_closes(bus: tidings.Bus) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(3, reset_after=10, clock=clock)
    letters: list[tidings.DeadLetter] = []
    bus.subscribe(tidings.DeadLetter, letters.append)
    calls: list[bool] = []

    def handler(call: Call) -> None:
        calls.append(call.ok)
        if not call.ok:
            raise DownError("down")

    sub = bus.subscribe(Call, handler, middleware=[breaker])
    bus.publish(Call(False))
    bus.publish(Call(True))  # a success resets the count
    for _ in range(3):
        bus.publish(Call(False))
    assert breaker.state == "open"
    assert len(calls) == 5
    bus.publish(Call(True))  # fails fast: the handler is not called
    clock.now += 9.5
    bus.publish(Call(True))
    assert len(calls) == 5
    assert breaker.rejected == 2
    assert [type(d.error) for d in letters] == [DownError] * 4 + [tidings.CircuitOpenError] * 2
    error = letters[-1].error
    assert isinstance(error, tidings.CircuitOpenError)
    assert error.handler == sub.name
    assert error.retry_after == pytest.approx(0.5)

    clock.now += 0.5  # cool-down over: one trial, which fails and opens it again
    bus.publish(Call(False))
    assert (len(calls), breaker.state) == (6, "open")
    bus.publish(Call(True))
    assert (len(calls), breaker.rejected) == (6, 3)

    clock.now += 10  # a successful trial closes it
    bus.publish(Call(True))
    assert (len(calls), breaker.state) == (7, "closed")
    bus.publish(Call(True))
    assert len(calls) == 8
    assert (sub.delivered, sub.failed) == (3, 8)
    assert len(letters) == 8


async def test_half_open_lets_one_trial_through_at_a_time() -> None:
    import asyncio

    clock = FakeClock()
    breaker = CircuitBreaker(1, reset_after=1, clock=clock)
    release = asyncio.Event()
    calls: list[bool] = []

    async def handler(call: Call) -> None:
        calls.append(call.ok)
        if not call.ok:
            raise DownError("down")
        await release.wait()

    async with tidings.Bus() as bus:
        bus.subscribe(Call, handler, middleware=[breaker])
        await bus.emit(Call(False))
        assert breaker.state == "open"
        clock.now += 1
        trial = asyncio.ensure_future(bus.emit(Call(True)))
        await asyncio.sleep(0)
        assert str(breaker.state) == "half_open"
        second = await bus.emit(Call(True))
        assert [type(e) for e in second.errors] == [tidings.CircuitOpenError]
        release.set()
        assert (await trial).ok
    assert str(breaker.state) == "closed"
    assert calls == [False, True]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="failures"):
        CircuitBreaker(0)
    with pytest.raises(ValueError, match="reset_after"):
        CircuitBreaker(1, reset_after=-1)
